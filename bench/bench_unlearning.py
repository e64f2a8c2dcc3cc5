"""Cost of the `unlearning` cleaner: exact (M unlearning steps + M x N loss re-evaluations per target) against
first_order (N + M per-song gradients and one matrix product per target), on generated songs with the `small`
model preset (16 kHz, mono), briefly trained on the (partly corrupted) training songs so gradients mean
something; plus the Spearman correlation of the two modes' unified song scores and their detection AUC.

    python bench/bench_unlearning.py [--sizes 50 200] [--refs 10] [--train-steps 30]
    python bench/bench_unlearning.py --sweep [--sizes 40]   # first_order vs exact error over lr and damping
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from stemsift import LABELS
from stemsift.clean.unlearning import UnlearningConfig, attribution
from stemsift.separate.model import build, preset, spectrogram

BANDS = {"vocals": (300, 1200), "bass": (40, 200), "drums": (2000, 6000), "other": (800, 3000)}


def make_song(rng: np.random.Generator, seconds: float, sr: int) -> dict[str, np.ndarray]:
    """Band-limited noise per label, gated by a random on/off envelope (notes) at a random level."""
    n = int(seconds * sr)
    out = {}
    for lb in LABELS:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / sr)
        lo, hi = BANDS[lb]
        spec[(f < lo * rng.uniform(0.8, 1.2)) | (f > hi * rng.uniform(0.8, 1.2))] = 0
        x = np.fft.irfft(spec, n=n)
        note = int(sr * rng.uniform(0.1, 0.5))
        gate = np.repeat(rng.random(n // note + 1) < rng.uniform(0.4, 0.9), note)[:n]
        env = np.convolve(gate.astype(float), np.hanning(256) / np.hanning(256).sum(), mode="same")
        out[lb] = (rng.uniform(0.05, 0.2) * env * x / (np.abs(x).max() + 1e-12)).astype(np.float32)[:, None]
    return out


def corrupt(song: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    s = dict(song)
    if kind == "swap":       # label noise: vocals and bass exchanged
        s["vocals"], s["bass"] = song["bass"], song["vocals"]
    elif kind == "bleed":    # drums leak into vocals at 0 dB
        s["vocals"] = song["vocals"] + song["drums"]
    return s


def make_world(n_train: int, n_ref: int, seconds: float, sr: int, seed: int = 0):
    """Train songs (a quarter swapped, a quarter bled, like the `mixed` preset), clean reference songs, and
    the set of corrupted train ids (for the AUC only; attribution never sees it)."""
    rng = np.random.default_rng(seed)
    ref = {f"ref-{j:03d}": make_song(rng, seconds, sr) for j in range(n_ref)}
    train, bad = {}, set()
    for i in range(n_train):
        tid, kind = f"train-{i:03d}", ("clean", "clean", "swap", "bleed")[i % 4]
        train[tid] = corrupt(make_song(rng, seconds, sr), kind)
        if kind != "clean":
            bad.add(tid)
    return train, ref, bad


def train_models(cfg, songs: dict, steps: int, seq_dur: float, seed: int = 0, batch: int = 8) -> dict:
    """The four target models, each trained `steps` Adam steps on random segments of the given songs."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec, seq = spectrogram(cfg), int(seq_dur * cfg.sample_rate)
    ids = list(songs)

    def batch_of(target: str):
        xs, ys = [], []
        for tid in rng.choice(ids, batch):
            n = len(songs[tid][target])
            s = int(rng.integers(max(n - seq, 0) + 1))
            seg = {lb: np.pad(songs[tid][lb][s:s + seq], ((0, max(0, seq - n + s)), (0, 0))) for lb in LABELS}
            xs.append(sum(seg.values()).T)
            ys.append(seg[target].T)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

    with torch.no_grad():
        frames = spec(batch_of("vocals")[0]).mean(1).permute(0, 2, 1).reshape(-1, cfg.nb_bins).double()
    mean, scale = frames.mean(0).numpy(), np.maximum(frames.std(0).numpy(), 1e-4)
    models = {}
    for t in LABELS:
        m = build(cfg, mean, scale)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        m.train()
        for _ in range(steps):
            x, y = batch_of(t)
            loss = torch.nn.functional.mse_loss(m(spec(x)), spec(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
        models[t] = m.eval()
    return models


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-300))


def sweep(models, cfg, train, ref, bad, seq_dur: float, lrs, dampings) -> None:
    """How linear is one exact step? first_order vs exact relative error over lr x damping, the size of the
    exact loss change relative to the loss, and both modes' detection AUC on the corrupted songs."""
    print(f"{'damping':>8s} {'lr':>8s} {'rel err':>8s} {'spearman':>9s} {'dL/L':>9s} {'AUC ex':>7s} {'AUC fo':>7s}")
    keep = lambda r: [tid not in bad for tid in r.train_ids]
    for damping in dampings:
        for lr in lrs:
            c = dict(lr=lr, damping=damping, seq_dur=seq_dur)
            ex = attribution(models, cfg, train, ref, UnlearningConfig(mode="exact", **c))
            fo = attribution(models, cfg, train, ref, UnlearningConfig(mode="first_order", **c))
            rho = spearmanr(ex.unified, fo.unified).statistic
            print(f"{damping:8.2g} {lr:8.0e} {rel_err(fo.delta, ex.delta):8.3f} {rho:9.3f} "
                  f"{np.abs(ex.delta).mean() / ex.base_loss.mean():9.2e} {roc_auc_score(keep(ex), ex.unified):7.3f} "
                  f"{roc_auc_score(keep(fo), fo.unified):7.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200], help="training songs N")
    ap.add_argument("--refs", type=int, default=10, help="clean reference songs M")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each generated song")
    ap.add_argument("--seq-dur", type=float, default=3.0)
    ap.add_argument("--train-steps", type=int, default=30, help="Adam steps per target model before attribution")
    ap.add_argument("--lr", type=float, default=UnlearningConfig.lr)
    ap.add_argument("--damping", type=float, default=UnlearningConfig.damping)
    ap.add_argument("--sweep", action="store_true", help="error of first_order vs exact over lr and damping")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4, 3e-5, 1e-5])
    ap.add_argument("--dampings", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: a busy 2-core machine makes 2 OpenMP threads spin, 10-100x slower)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = preset("small", nb_channels=1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, small preset ({cfg.sample_rate} Hz, mono), "
          f"M={a.refs} reference songs, {a.seconds:g} s songs, 2 x {a.seq_dur:g} s segments, lr={a.lr:g}, "
          f"damping={a.damping:g}\n")
    if a.sweep:
        train, ref, bad = make_world(a.sizes[0], a.refs, a.seconds, cfg.sample_rate)
        sweep(train_models(cfg, train, a.train_steps, a.seq_dur), cfg, train, ref, bad, a.seq_dur, a.lrs, a.dampings)
        return
    print(f"{'N':>4s} {'mode':12s} {'fisher':>7s} {'unlearn':>8s} {'attrib':>7s} {'total':>7s} {'ratio':>6s} "
          f"{'spearman':>9s} {'AUC':>6s}")
    for n in a.sizes:
        train, ref, bad = make_world(n, a.refs, a.seconds, cfg.sample_rate)
        t0 = time.perf_counter()
        models = train_models(cfg, train, a.train_steps, a.seq_dur)
        fit = time.perf_counter() - t0
        res = {mode: attribution(models, cfg, train, ref, UnlearningConfig(mode=mode, lr=a.lr, damping=a.damping,
                                                                           seq_dur=a.seq_dur))
               for mode in ("exact", "first_order")}
        rho = spearmanr(res["exact"].unified, res["first_order"].unified).statistic
        rho_t = np.mean([spearmanr(res["exact"].per_target[:, k], res["first_order"].per_target[:, k]).statistic
                         for k in range(len(LABELS))])
        for mode in ("exact", "first_order"):
            r, s = res[mode], res[mode].seconds
            ratio = s["total"] / res["first_order"].seconds["total"]
            auc = roc_auc_score([tid not in bad for tid in r.train_ids], r.unified)  # clean = keep = high
            print(f"{n:4d} {mode:12s} {s['fisher']:6.1f}s {s['unlearning']:7.1f}s {s['attribution']:6.1f}s "
                  f"{s['total']:6.1f}s {ratio:5.1f}x {rho:9.3f} {auc:6.3f}", flush=True)
        print(f"     (model fit {fit:.0f} s; per-target Spearman mean {rho_t:.3f}; "
              f"rel. error first_order vs exact {rel_err(res['first_order'].delta, res['exact'].delta):.3f})")
    print("\nfisher: N per-song gradients; unlearn: reference gradients (+ exact: the steps); "
          "attrib: exact = 1 + M loss passes over N songs, first_order = one (N x P)(P x M) product; per 4 targets")


if __name__ == "__main__":
    main()

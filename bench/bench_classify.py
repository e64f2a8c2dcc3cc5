"""Speed of the self-refining classifier Ψ (timm ConvNeXt on log-mels): training steps per second and examples
per second (random mixes built on the fly, BCE, AdamW), and inference as × real time (framewise windows over whole
stems), per preset, side by side in one run. Data: generated band-noise stems, 20 s, mono, 16 kHz.

    python bench/bench_classify.py [--presets small paper] [--steps 10] [--batch 32] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from stemsift import LABELS
from stemsift.classify.mixing import RandomMixer
from stemsift.classify.model import InstrumentClassifier, preset
from stemsift.classify.train import ClassifierTrainConfig, predict_signals


class MemoryPool:
    """The StemPool interface over generated int16 stems (no files)."""

    def __init__(self, songs: int, seconds: float, sample_rate: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.sample_rate = sample_rate
        n = int(seconds * sample_rate)
        self.audio = {}
        for s in range(songs):
            for i, lb in enumerate(LABELS):
                x = np.cumsum(rng.standard_normal(n)) if i == 1 else rng.standard_normal(n)  # bass: brown noise
                x = 0.3 * x / (np.abs(x).max() + 1e-9)
                self.audio[(f"song{s}", lb)] = np.round(x * 32767).astype(np.int16)[:, None]

    def frames(self, key):
        return len(self.audio[key])

    def segment(self, key, start, length):
        seg = self.audio[key][start:start + length]
        return np.pad(seg, ((0, length - len(seg)), (0, 0))).astype(np.float32) / 32768.0


def bench(name: str, steps: int, batch: int) -> dict:
    cfg = preset(name)
    pool = MemoryPool(4, 20.0, cfg.sample_rate)
    labels = {k: frozenset({k[1]}) for k in pool.audio}
    mixer = RandomMixer(pool, labels, cfg.seg_len, np.random.default_rng(0), effects_prob=0.3)
    model = InstrumentClassifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    data = 0.0
    for _ in range(steps):
        d0 = time.perf_counter()
        x, y = mixer.batch(batch)
        data += time.perf_counter() - d0
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train = (time.perf_counter() - t0) / steps
    signals = [pool.audio[k][:, 0].astype(np.float32) / 32768 for k in list(pool.audio)[:8]]
    t0 = time.perf_counter()
    predict_signals(model, signals)
    infer = time.perf_counter() - t0
    audio_s = sum(len(s) for s in signals) / cfg.sample_rate
    return {"preset": name, "params_M": params / 1e6, "s_per_step": train, "data_share": data / steps / train,
            "examples_per_s": batch / train, "infer_x_realtime": audio_s / infer,
            "default_steps_min": ClassifierTrainConfig().steps * train / 60}  # one classifier of the refine stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["small", "paper"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(p, args.steps, args.batch) for p in args.presets]
    print(f"{'preset':8s} {'params M':>8s} {'s/step':>8s} {'data %':>7s} {'ex/s':>8s} {'infer ×RT':>10s} "
          f"{f'{ClassifierTrainConfig().steps} steps min':>15s}")
    for r in rows:
        print(f"{r['preset']:8s} {r['params_M']:8.2f} {r['s_per_step']:8.3f} {100 * r['data_share']:7.1f} "
              f"{r['examples_per_s']:8.1f} {r['infer_x_realtime']:10.1f} {r['default_steps_min']:15.1f}")


if __name__ == "__main__":
    main()

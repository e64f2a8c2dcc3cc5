"""`unlearning`: data attribution by unlearning (Blind data cleaning 2025, after Wang et al., "Data Attribution
for Text-to-Image Models by Unlearning Synthesized Images", NeurIPS 2024, github.com/PeterWang512/AttributeByUnlearning).

Per target model t (Open-Unmix, one per label) and clean reference song y_j: "unlearn" y_j by one (or a few)
Fisher-preconditioned gradient-ascent steps on its training loss, then measure how much the loss of every
training song x_i rises. The loss of a training song that shares what the model learned from clean songs rises
with theirs (a copy of y_j rises most); a song that does not align with clean data barely moves, or falls, so

    score(x_i, t) = mean_j dL_ij^t  (higher = keep),   unified song score = mean_j,t dL_ij^t.

Formulas (AbU, Sec. 3-4; the 1/N removal step is the influence-function Newton step of Koh & Liang 2017):
    L_t(x)   = mean MSE(model_t(|STFT(mix_x)|), |STFT(stem_x,t)|) over fixed, evenly spaced segments of x
    F_ii     = 1/N sum_x (dL_t(x)/dtheta_i)^2                  (diagonal empirical Fisher, float64)
    theta'_j = theta + alpha/N (F + lambda)^-1 grad L_t(y_j)      (gradient *ascent*; `steps` times)
    dL_ij    = L_t(x_i, theta'_j) - L_t(x_i, theta)                (mode exact)
    dL_ij   ~= alpha/N grad L_t(x_i)^T (F + lambda)^-1 grad L_t(y_j)   (mode first_order, first-order Taylor)

lambda = damping * mean(F_ii): a damping relative to the Fisher's own scale, so the first-order dL does not
change when the loss is rescaled (louder audio) and one damping fits models of any size.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from stemsift import LABELS
from stemsift.clean.base import Cleaner, CleanerError, StemView, register
from stemsift.clean.baseline import ViewSongs, baseline_folder
from stemsift.clean.frames import single_thread
from stemsift.separate.model import ModelConfig, load, resolve_device, spectrogram

MODES = ("exact", "first_order")
# Open-Unmix's parameter groups by top-level module name (fc1/bn1 encode, lstm, fc2/bn2 + fc3/bn3 decode)
PARAM_GROUPS = {"all": (), "head": ("fc2", "bn2", "fc3", "bn3"), "lstm": ("lstm",)}


@dataclass(frozen=True)
class UnlearningConfig:
    mode: str = "first_order"   # exact | first_order
    # alpha: the exact step stays linear-ish (first_order vs exact relative error 4%, Spearman 1.000, mean loss
    # rise 0.3%) on the trained small baseline (N=100, M=20; 1e-5: 15%, 1e-4: 73%); float32 rounding of the
    # exact differences shows only ~100x below the linear regime (tiny test model). first_order ranks do not
    # depend on alpha at all.
    lr: float = 3e-6
    steps: int = 1
    damping: float = 0.1        # lambda = damping * mean(F_ii) (relative); detection AUC flat over 1e-3..10
    segments: int = 2           # fixed segments per song
    seq_dur: float = 3.0        # seconds per segment (train.seq_dur)
    seed: int = 0               # torch seed; the method itself draws nothing at random
    batch: int = 8              # songs per batched forward in the exact re-evaluations
    params: str = "all"         # weights unlearned: all | head (fc2, fc3 and their norms) | lstm
    loss: str = "mse"           # mse (the training loss) | nmse (divided by the target's energy: loudness-free)
    normalize: str = "none"     # none | cosine: dL_ij / (|g_i|_P |g_j|_P), first_order only (direction, not size)

    def check(self) -> "UnlearningConfig":
        if self.mode not in MODES:
            raise CleanerError(f"unlearning.mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if not self.lr >= 0:
            raise CleanerError(f"unlearning.lr: must be >= 0, got {self.lr}")
        if int(self.steps) < 1:
            raise CleanerError(f"unlearning.steps: must be >= 1, got {self.steps}")
        if not self.damping > 0:
            raise CleanerError(f"unlearning.damping: must be > 0 (F is singular without it), got {self.damping}")
        if int(self.segments) < 1 or not self.seq_dur > 0:
            raise CleanerError("unlearning.segments / seq_dur: need at least one segment of positive length")
        for key, allowed in (("params", PARAM_GROUPS), ("loss", ("mse", "nmse")), ("normalize", ("none", "cosine"))):
            if getattr(self, key) not in allowed:
                raise CleanerError(f"unlearning.{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        if self.normalize != "none" and self.mode != "first_order":
            raise CleanerError("unlearning.normalize: cosine needs mode first_order")
        return self


@dataclass
class AttributionResult:
    delta: np.ndarray                    # (N train, M reference, T targets) loss increase dL_ij^t
    train_ids: list[str]
    ref_ids: list[str]
    targets: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    base_loss: np.ndarray | None = None  # (N, T) L_t(x_i, theta), exact mode only

    @property
    def per_target(self) -> np.ndarray:
        """(N, T): mean over reference songs; ranks the stems of each target model."""
        return self.delta.mean(axis=1)

    @property
    def unified(self) -> np.ndarray:
        """(N,): mean over reference songs and targets; ranks whole songs."""
        return self.delta.mean(axis=(1, 2))

    def table(self) -> pd.DataFrame:
        """Long form (track_id, reference_id, target, delta): the full N x M x T matrix for storage."""
        n, m, t = self.delta.shape
        return pd.DataFrame({"track_id": np.repeat(self.train_ids, m * t),
                             "reference_id": np.tile(np.repeat(self.ref_ids, t), n),
                             "target": np.tile(self.targets, n * m),
                             "delta": self.delta.reshape(-1)})


# ---- data: identical segments every time a song's loss is evaluated ---------------------------------------

def segment_starts(frames: int, seq_len: int, segments: int) -> np.ndarray:
    """Evenly spaced offsets, as separate.data.fixed_segments (the validation segments)."""
    return np.linspace(0, max(frames - seq_len, 0), segments).astype(int)


def song_segments(audio: Mapping[str, np.ndarray], cfg: UnlearningConfig,
                  sample_rate: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One song's stems (label -> (frames, channels) float at the model rate) -> mixture segments
    (segments, channels, samples) = sum of the four stems, and the same segments of every stem."""
    seq_len = int(round(cfg.seq_dur * sample_rate))
    frames = min(len(audio[lb]) for lb in LABELS)
    segs = {}
    for lb in LABELS:
        x = np.asarray(audio[lb], dtype=np.float32)[:frames]
        out = np.zeros((cfg.segments, seq_len, x.shape[1]), dtype=np.float32)  # short songs: zero-padded
        for k, s in enumerate(segment_starts(frames, seq_len, cfg.segments)):
            piece = x[s:s + seq_len]
            out[k, :len(piece)] = piece
        segs[lb] = torch.from_numpy(np.ascontiguousarray(out.transpose(0, 2, 1)))
    mix = sum(segs[lb] for lb in LABELS)
    return mix, segs


@dataclass
class _Songs:
    ids: list[str]
    mix: torch.Tensor                  # (N, S, C, samples)
    stems: dict[str, torch.Tensor]     # label -> (N, S, C, samples)


def _segment_all(songs: Mapping[str, Mapping[str, np.ndarray]], cfg: UnlearningConfig, sr: int) -> _Songs:
    ids, mixes, stems = [], [], {lb: [] for lb in LABELS}
    for tid in songs:  # one song's full audio at a time: only its segments are kept
        mix, segs = song_segments(songs[tid], cfg, sr)
        ids.append(str(tid))
        mixes.append(mix)
        for lb in LABELS:
            stems[lb].append(segs[lb])
    if not ids:
        raise CleanerError("unlearning: no songs to segment")
    return _Songs(ids, torch.stack(mixes), {lb: torch.stack(v) for lb, v in stems.items()})


# ---- losses, gradients, Fisher ----------------------------------------------------------------------------

def _params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def select_params(model: torch.nn.Module, group: str) -> None:
    """Only the weights of ``group`` take part (AbU unlearns a subset of weights); the rest are frozen."""
    for name, p in model.named_parameters():
        p.requires_grad_(group == "all" or name.split(".")[0] in PARAM_GROUPS[group])


@contextlib.contextmanager
def gradient_mode(device: torch.device):
    """cuDNN's RNN backward refuses eval mode (seen on an H200); the native LSTM kernels do not. CPU: no-op."""
    with torch.backends.cudnn.flags(enabled=device.type != "cuda"):
        yield


def song_loss(model, spec, mix: torch.Tensor, target: torch.Tensor, energy: bool = False) -> torch.Tensor:
    """L_t(x): the training loss (MSE of magnitude spectrograms) over one song's segments (S, C, samples);
    with ``energy``, divided by the target's mean squared magnitude (a constant in theta)."""
    y = spec(target)
    loss = torch.nn.functional.mse_loss(model(spec(mix)), y)
    return loss / y.detach().pow(2).mean().clamp_min(1e-10) if energy else loss


def song_losses(model, spec, mix: torch.Tensor, target: torch.Tensor, batch: int = 8, energy: bool = False) -> np.ndarray:
    """L_t for many songs (N, S, C, samples) -> (N,) float64, batched, without autograd. The per-segment
    means are equal-sized, so their mean is the song's loss; squares are summed in float64."""
    n, s = mix.shape[:2]
    out = np.empty(n, dtype=np.float64)
    p = next(model.parameters())
    with torch.inference_mode():
        for i in range(0, n, batch):
            x = mix[i:i + batch].flatten(0, 1).to(p.device, p.dtype)
            y = target[i:i + batch].flatten(0, 1).to(p.device, p.dtype)
            sy = spec(y)
            err = (model(spec(x)) - sy).double().pow(2).flatten(1).mean(1).reshape(-1, s).mean(1)
            if energy:
                err = err / sy.double().pow(2).flatten(1).mean(1).reshape(-1, s).mean(1).clamp_min(1e-10)
            out[i:i + batch] = err.cpu().numpy()
    return out


def song_gradient(model, spec, mix: torch.Tensor, target: torch.Tensor, energy: bool = False) -> list[torch.Tensor]:
    """dL_t(x)/dtheta for one song (plain autograd; the parameters' .grad is left untouched)."""
    p = next(model.parameters())
    with gradient_mode(p.device):
        loss = song_loss(model, spec, mix.to(p.device, p.dtype), target.to(p.device, p.dtype), energy)
        return list(torch.autograd.grad(loss, _params(model)))


def fisher_diagonal(model, spec, songs: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    keep: list[torch.Tensor] | None = None, energy: bool = False) -> list[torch.Tensor]:
    """Diagonal empirical Fisher F_ii = 1/N sum_x (dL(x)/dtheta_i)^2 from per-song gradients, in float64,
    shaped like the parameters. With ``keep``, each song's flattened float32 gradient is appended to it
    (first_order reuses them instead of a second pass). AbU, Sec. 4 (EWC-style diagonal Fisher)."""
    fisher = [torch.zeros_like(p, dtype=torch.float64) for p in _params(model)]
    n = 0
    for mix, target in songs:
        g = song_gradient(model, spec, mix, target, energy)
        for f, gi in zip(fisher, g):
            f.add_(gi.double().square())
        if keep is not None:
            keep.append(torch.cat([gi.reshape(-1) for gi in g]).cpu())
        n += 1
    if n == 0:
        raise CleanerError("unlearning: the Fisher needs at least one training song")
    return [f / n for f in fisher]


def preconditioner(fisher: list[torch.Tensor], damping: float) -> list[torch.Tensor]:
    """1 / (F + lambda), lambda = damping * mean(F) (float64, parameter shapes)."""
    total = sum(f.sum() for f in fisher)
    count = sum(f.numel() for f in fisher)
    lam = damping * float(total / count)
    if not lam > 0:  # a model whose loss has no gradient at all (e.g. all-silent songs): fall back to lambda
        lam = damping
    return [1.0 / (f + lam) for f in fisher]


# ---- attribution -------------------------------------------------------------------------------------------

def _attribute_target(model, spec, train: _Songs, ref: _Songs, label: str, cfg: UnlearningConfig,
                      seconds: dict[str, float]) -> tuple[np.ndarray, np.ndarray | None]:
    n, m = len(train.ids), len(ref.ids)
    coef = cfg.lr / n
    t0 = time.perf_counter()
    grads: list[torch.Tensor] | None = [] if cfg.mode == "first_order" else None
    energy = cfg.loss == "nmse"
    fisher = fisher_diagonal(model, spec, zip(train.mix, train.stems[label]), keep=grads, energy=energy)
    inv = preconditioner(fisher, cfg.damping)
    t1 = time.perf_counter()
    seconds["fisher"] += t1 - t0

    if cfg.mode == "first_order":
        # dL_ij ~= alpha/N g_i^T (F+lambda)^-1 g_j; with steps > 1 the single-step term is multiplied by steps
        # (the gradient is not re-evaluated along the path: the same first-order approximation, repeated)
        inv_flat = torch.cat([v.reshape(-1) for v in inv]).cpu()
        r = torch.stack([torch.cat([g.reshape(-1) for g in song_gradient(model, spec, x, y, energy)]).cpu().double()
                         for x, y in zip(ref.mix, ref.stems[label])]) * inv_flat          # (M, P) float64
        t2 = time.perf_counter()
        seconds["unlearning"] += t2 - t1
        delta = np.empty((n, m), dtype=np.float64)
        rows = max(1, int(2**25 // max(r.shape[1], 1)))  # <= 256 MiB of float64 per chunk
        for i in range(0, n, rows):
            delta[i:i + rows] = (torch.stack(grads[i:i + rows]).double() @ r.T).numpy()
        delta *= coef * cfg.steps
        if cfg.normalize == "cosine":  # |g|_P = sqrt(g^T (F+lambda)^-1 g): the preconditioned norm
            ref_norm = torch.sqrt((r * r / inv_flat).sum(1)).numpy()
            train_norm = np.array([float(torch.sqrt((g.double() ** 2 * inv_flat).sum())) for g in grads])
            delta /= np.maximum(np.outer(train_norm, ref_norm), 1e-30)
        seconds["attribution"] += time.perf_counter() - t2
        return delta, None

    base = song_losses(model, spec, train.mix, train.stems[label], cfg.batch, energy)
    seconds["attribution"] += time.perf_counter() - t1
    params = _params(model)
    theta = [p.detach().clone() for p in params]
    delta = np.empty((n, m), dtype=np.float64)
    try:
        for j in range(m):
            t2 = time.perf_counter()
            for _ in range(int(cfg.steps)):  # gradient ascent on the reference song, re-evaluated at theta'
                g = song_gradient(model, spec, ref.mix[j], ref.stems[label][j], energy)
                with torch.no_grad():
                    for p, gi, v in zip(params, g, inv):
                        p.add_((coef * gi.double() * v).to(p.dtype))
            t3 = time.perf_counter()
            seconds["unlearning"] += t3 - t2
            delta[:, j] = song_losses(model, spec, train.mix, train.stems[label], cfg.batch, energy) - base
            with torch.no_grad():  # restore theta exactly before the next reference song
                for p, p0 in zip(params, theta):
                    p.copy_(p0)
            seconds["attribution"] += time.perf_counter() - t3
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, theta):
                p.copy_(p0)
    return delta, base


def attribution(models: Mapping[str, torch.nn.Module], model_cfg: ModelConfig,
                train_songs: Mapping[str, Mapping[str, np.ndarray]], ref_songs: Mapping[str, Mapping[str, np.ndarray]],
                cfg: UnlearningConfig = UnlearningConfig(), device: str | torch.device = "cpu") -> AttributionResult:
    """dL (N train, M reference, T targets) for every target model in ``models`` (LABELS order).
    Songs: track_id -> label -> (frames, channels) float audio at ``model_cfg.sample_rate``/``nb_channels``.
    The caller's models are not modified (each is copied, put in eval mode: no dropout, BatchNorm statistics)."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    device = torch.device(device)
    targets = [t for t in LABELS if t in models]
    if not targets:
        raise CleanerError(f"unlearning: no model for any of {', '.join(LABELS)}")
    seconds = {"data": 0.0, "fisher": 0.0, "unlearning": 0.0, "attribution": 0.0}
    t0 = time.perf_counter()
    train = _segment_all(train_songs, cfg, model_cfg.sample_rate)
    ref = _segment_all(ref_songs, cfg, model_cfg.sample_rate)
    spec = spectrogram(model_cfg).to(device)
    seconds["data"] = time.perf_counter() - t0
    delta = np.empty((len(train.ids), len(ref.ids), len(targets)), dtype=np.float64)
    base = np.empty((len(train.ids), len(targets)), dtype=np.float64)
    for k, t in enumerate(targets):
        model = copy.deepcopy(models[t]).to(device).eval()
        select_params(model, cfg.params)
        dtype = next(model.parameters()).dtype  # float64 models (tests) evaluate in float64 throughout
        delta[:, :, k], b = _attribute_target(model, spec.to(dtype), train, ref, t, cfg, seconds)
        if b is not None:
            base[:, k] = b
        del model
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    seconds["total"] = round(time.perf_counter() - t0, 3)
    return AttributionResult(delta, train.ids, ref.ids, targets, seconds, asdict(cfg),
                             base if cfg.mode == "exact" else None)


# ---- the cleaner -------------------------------------------------------------------------------------------

def deflate(delta: np.ndarray) -> np.ndarray:
    """dL minus its leading singular component, per target model. Measured on the default set, that component
    holds 59-94% of each N x M matrix's energy: every training song's loss moves along one shared direction by
    an amount that tracks its own loss and loudness (Spearman -0.70 / -0.65), whichever clean song is unlearned.
    What remains is how a song's response differs across clean songs: the attribution proper."""
    out = np.empty_like(delta)
    for k in range(delta.shape[2]):
        u, s, vt = np.linalg.svd(delta[:, :, k], full_matrices=False)
        out[:, :, k] = delta[:, :, k] - s[0] * np.outer(u[:, 0], vt[0])
    return out


@register
class UnlearningCleaner(Cleaner):
    name = "unlearning"
    needs = ("baseline",)
    defaults = {"mode": "first_order", "lr": UnlearningConfig.lr, "steps": 1, "damping": UnlearningConfig.damping,
                "segments": 2, "seq_dur": 3.0, "model": "models/baseline", "model_seed": None, "device": "auto",
                "params": "all", "loss": "mse", "normalize": "none", "deflate": True}

    result: AttributionResult | None = None

    def unlearning_config(self) -> UnlearningConfig:
        o = self.options
        return UnlearningConfig(mode=str(o["mode"]), lr=float(o["lr"]), steps=int(o["steps"]),
                                damping=float(o["damping"]), segments=int(o["segments"]),
                                seq_dur=float(o["seq_dur"]), seed=self.seed, params=str(o["params"]),
                                loss=str(o["loss"]), normalize=str(o["normalize"])).check()

    def score_stems(self, view: StemView) -> np.ndarray:
        cfg = self.unlearning_config()
        try:
            device = resolve_device(str(self.options["device"]), "unlearning.device")
        except ValueError as e:
            raise CleanerError(f"unlearning.device: {e}") from None
        models, mcfg, _ = load(baseline_folder(self.options["model"], self.options["model_seed"]))
        train = ViewSongs(view, view.train, mcfg.sample_rate, mcfg.nb_channels)
        ref = ViewSongs(view, view.reference, mcfg.sample_rate, mcfg.nb_channels)
        if not len(ref):
            raise CleanerError("unlearning: the view has no reference songs to unlearn")
        with single_thread():  # per-song backward passes of a small model: a second thread loses more than it gains
            self.result = res = attribution(models, mcfg, train, ref, cfg, device)
        missing = sorted(set(view.train.label) - set(res.targets))
        if missing:
            raise CleanerError(f"unlearning.model: the baseline has no {missing[0]!r} model")
        row = {tid: i for i, tid in enumerate(res.train_ids)}
        col = {t: k for k, t in enumerate(res.targets)}
        self._delta = deflate(res.delta) if self.options["deflate"] else res.delta
        per_target = self._delta.mean(axis=1)
        return np.array([per_target[row[tid], col[lb]] for tid, lb in zip(view.train.track_id, view.train.label)])

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        """The unified score: dL averaged over reference songs and all target models."""
        if self.result is None:
            return super().song_scores(stems)
        return pd.Series(self._delta.mean(axis=(1, 2)), index=pd.Index(self.result.train_ids, name="track_id"))

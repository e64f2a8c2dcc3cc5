"""`degrade` (blind): a self-supervised degradation detector trained on the clean reference split only.

The synthetic-anomaly recipe (CutPaste, Li et al. CVPR 2021) for audio: positives are reference segments as they
are, negatives the same segments through a random chain of generic processing (`clean/processing.py`: filters and
shelves, reverbs, echoes, saturation, dynamics, codecs, modulation, noise; Koo et al. ISMIR 2023 train with effect
augmentation of the same kind). A gradient-boosted classifier on level-free segment statistics (every segment is
brought to unit RMS: the simulator level-matches processed stems, so absolute level must say nothing) learns
P(unprocessed); a stem's score is that probability averaged over evenly spread segments, a song's its worst
stem (``song: min``) or the mean. ``exclude`` leaves processing families or single members out of training, so
detection of an effect never shown (near / strict held-out) can be measured.

``positives: collection`` also learns from the collection's own training stems, unlabelled but mostly clean (a
detector trained on contaminated normal data, as in anomaly detection without clean labels): each joins the positives
with ``collection_segments`` segments and their processed copies (at most ``collection_songs`` training songs, a seeded
sample: the positives need the collection's timbres, not every song, so the cost of learning stays flat in N), so "unprocessed" covers the instruments and textures
of this collection, not only of its small reference split. Cross-fitting keeps every score out of sample: the songs
(reference and training) fall in ``null_folds`` folds, and the model fitted without a fold scores that fold's training
stems and, as the clean null, its reference stems. ``trim`` refines the positives (Yoon et al., "Self-supervised,
Refine, Repeat", TMLR 2022): after each round of cross-fitted scores, the ``trim`` share of each label's training
stems that look most processed leave the next round's examples (as they are and their copies), ``trim_rounds`` times,
so a contaminated collection teaches less of its own damage as "unprocessed" (``positives: reference`` learns from
no training stem, so it trims nothing).
"""
from __future__ import annotations

import time
from functools import partial

import numpy as np
import pandas as pd
from scipy.fft import rfft
from threadpoolctl import threadpool_limits

from stemsift import LABELS
from stemsift.clean.base import Cleaner, CleanerError, StemView, register, sample_songs
from stemsift.clean.processing import allowed_members, apply_chain, draw_chain
from stemsift.stemset import SILENCE_DB

EPS = 1e-10
FEATURE_DECIMALS = 6  # segment features rounded to this many decimals (same model whatever the CPU's SIMD)
PRE_ROLL_S = 1.0   # processed with this much audio before the segment, so reverb tails and filters are settled


# ---------------------------------------------------------------------------------------------- features

def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 30.0) -> np.ndarray:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), HTK mel scale, unit peak."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(fmin), mel(sr / 2), n_mels + 2) / 2595) - 1)
    f = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.clip(np.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)), 0, None)


def _groups(v: np.ndarray, n: int, axis: int = 1) -> np.ndarray:
    """Means of ``n`` contiguous groups along ``axis`` (the groups take that axis's place)."""
    return np.stack([g.mean(axis=axis) for g in np.array_split(v, n, axis=axis)], axis=axis)


def _q(a: np.ndarray, qs, axis: int = -1) -> np.ndarray:
    """Quantiles (0..1, nearest rank) along ``axis``, stacked on a new last axis: one sort, no np.percentile."""
    a = np.sort(np.moveaxis(a, axis, -1), axis=-1)
    n = a.shape[-1]
    return a[..., [min(n - 1, int(round(q * (n - 1)))) for q in qs]]


def _wstats(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean, std, 10th and 90th percentile of each row of ``v`` (n, T) under weights ``w`` (n, T)."""
    w = w / (w.sum(1, keepdims=True) + EPS)
    mean = (v * w).sum(1)
    std = np.sqrt(((v - mean[:, None]) ** 2 * w).sum(1))
    order = np.argsort(v, axis=1)
    vs, cw = np.take_along_axis(v, order, 1), np.cumsum(np.take_along_axis(w, order, 1), 1)
    qs = [np.take_along_axis(vs, np.argmax(cw >= q, axis=1)[:, None], 1)[:, 0] for q in (0.1, 0.9)]
    return np.stack([mean, std, *qs], axis=1)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.sqrt((a ** 2).sum(1) * (b ** 2).sum(1)) + EPS)


def segment_features(x: np.ndarray, sr: int, n_mels: int = 40) -> np.ndarray:
    """Level-free statistics of mono segments (n, samples) -> (n, features); one segment (samples,) -> (features,).

    Every segment is brought to unit RMS first. Per mel band: mean relative to the segment's mean (spectral shape),
    spread and delta spread over time; per band group: noise floor and peaks against the median, attack minus decay,
    modulation spectrum; spectral flatness, centroid, roll-offs and contrast over the audible frames; frame-to-frame
    spectral correlation and the envelope's autocorrelation (reverb smears both); crest factor, kurtosis and the
    amplitude histogram (clipping)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return segment_features(x[None], sr, n_mels)[0]
    n = len(x)
    x = x / np.maximum(np.sqrt(np.mean(x ** 2, axis=1, keepdims=True)), 1e-30)  # no additive floor: exactly level-free
    n_fft = 1 << int(np.ceil(np.log2(0.032 * sr)))
    hop = n_fft // 4
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, ::hop]
    spec = np.abs(rfft(frames * np.hanning(n_fft), axis=2)) ** 2  # (n, frames, bins)
    mel = (spec @ mel_filterbank(sr, n_fft, n_mels).T).transpose(0, 2, 1)
    spec = spec.transpose(0, 2, 1)  # (n, bins, frames)
    L = 10 * np.log10(mel + EPS)
    out = [L.mean(2) - L.mean((1, 2))[:, None], L.std(2), np.diff(L, axis=2).std(2)]
    p10, med, p90 = np.moveaxis(_q(L, (0.1, 0.5, 0.9), axis=2), -1, 0)
    out += [_groups(p10 - med, 8), _groups(p90 - med, 8)]
    # attack minus decay (overall and per band group): reverb and compression slow the decays, clipping the attacks
    e = 10 * np.log10(np.concatenate([mel.sum(1, keepdims=True), _groups(mel, 4)], axis=1) + EPS)
    d = np.diff(e, axis=2)
    up = (d * (d > 0)).sum(2) / np.maximum((d > 0).sum(2), 1)
    down = (-d * (d < 0)).sum(2) / np.maximum((d < 0).sum(2), 1)
    out += [up - down, _q(d, (0.05, 0.95)).reshape(n, -1), (e < e.max(2, keepdims=True) - 40).mean(2)]
    # spectral descriptors, weighted to the frames within 40 dB of the loudest
    frame_db = 10 * np.log10(spec.sum(1) + EPS)
    w = (frame_db > frame_db.max(1, keepdims=True) - 40).astype(np.float64)
    s = spec + EPS
    ls = np.log(s)
    freqs = np.linspace(0, sr / 2, spec.shape[1], )[None, :, None]
    total = s.sum(1)
    flat = np.exp(ls.mean(1)) / s.mean(1)
    cent = np.log((freqs * s).sum(1) / total + 1.0)
    cum = np.cumsum(s, axis=1) / total[:, None]
    rolls = [np.log(freqs[0, np.argmax(cum >= q, axis=1), 0] + 1.0) for q in (0.85, 0.95, 0.99)]
    out += [_wstats(v, w) for v in [flat, cent, *rolls]]
    contrast = np.stack([np.diff(_q(b, (0.02, 0.98), axis=1), axis=-1)[..., 0] for b in np.array_split(ls[:, 1:], 6, axis=1)], 1)
    out.append((contrast * w[:, None]).sum(2) / (w.sum(1)[:, None] + EPS))
    Lc = L - L.mean(1, keepdims=True)
    corr = (Lc[:, :, 1:] * Lc[:, :, :-1]).sum(1) / (np.sqrt((Lc[:, :, 1:] ** 2).sum(1) * (Lc[:, :, :-1] ** 2).sum(1)) + EPS)
    out += [corr.mean(1, keepdims=True), _q(corr, (0.1, 0.5))]
    fe = frame_db - frame_db.mean(1, keepdims=True)
    out.append(np.stack([_pearson(fe[:, :-k], fe[:, k:]) for k in (1, 2, 4, 8, 16)], 1))
    # modulation spectrum of five band groups: share of envelope fluctuation per octave of modulation frequency
    rate = sr / hop
    env = _groups(mel, 5)
    env = env / (env.mean(2, keepdims=True) + EPS) - 1
    p = np.abs(np.fft.rfft(env * np.hanning(env.shape[2]), axis=2)) ** 2
    f = np.fft.rfftfreq(env.shape[2], 1 / rate)
    edges = [0.5, 1, 2, 4, 8, 16, 32, rate / 2]
    bands = np.stack([p[:, :, (f >= lo) & (f < hi)].sum(2) for lo, hi in zip(edges[:-1], edges[1:])], 2)
    out.append(np.log10(bands / (bands.sum(2, keepdims=True) + EPS) + 1e-6).reshape(n, -1))
    peak = np.abs(x).max(1, keepdims=True) + EPS
    a = np.abs(x) / peak
    idx = np.minimum((a * 10).astype(int), 9) + 10 * np.arange(n)[:, None]
    hist = np.bincount(idx.ravel(), minlength=10 * n).reshape(n, 10) / x.shape[1]
    kurt = np.mean(x ** 4, axis=1) / (np.mean(x ** 2, axis=1) ** 2 + EPS)
    out += [20 * np.log10(peak), np.log(kurt + EPS)[:, None], (a > 0.98).mean(1, keepdims=True), np.log10(hist + 1e-6)]
    feats = np.nan_to_num(np.concatenate([np.asarray(v, dtype=np.float64).reshape(n, -1) for v in out], axis=1))
    # numpy's SIMD paths (AVX-512 or AVX2) differ in the last bits and boosting amplifies that: one model on every CPU
    return np.round(feats, FEATURE_DECIMALS)


# ---------------------------------------------------------------------------------------------- segments

def _mono(x: np.ndarray, frames: int) -> np.ndarray:
    """Channel mean, zero-padded to at least ``frames`` (a stem shorter than one segment is still one segment)."""
    x = np.asarray(x, dtype=np.float64)
    x = x.mean(axis=1) if x.ndim == 2 else x
    return np.pad(x, (0, max(0, frames - len(x))))


def audible_starts(x: np.ndarray, seg: int, floor_db: float = 30.0) -> np.ndarray:
    """Starts (hop seg/4) of the windows whose RMS is within ``floor_db`` of the loudest and above silence."""
    if len(x) < seg:
        return np.zeros(0, dtype=int)
    starts = np.arange(0, len(x) - seg + 1, max(1, seg // 4))
    rms = np.array([10 * np.log10(np.mean(x[s:s + seg] ** 2) + 1e-20) for s in starts])
    return starts[(rms > rms.max() - floor_db) & (rms > SILENCE_DB)]


def reference_examples(item: tuple[np.ndarray, str, int], sr: int, seg_s: float, segments: int, copies: int,
                       allowed: dict, max_chain: int, n_mels: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Features of one reference stem's segments as they are (y=1) and through ``copies`` random chains each (y=0);
    also the chains drawn (for inspection)."""
    audio, _, seed = item
    seg, pre = int(seg_s * sr), int(PRE_ROLL_S * sr)
    x = _mono(audio, seg)
    starts = audible_starts(x, seg)
    rng = np.random.default_rng(seed)
    segs, ys, chains = [], [], []
    if not len(starts):
        return np.zeros((0, 0)), np.zeros(0), []
    for s in rng.choice(starts, size=segments, replace=len(starts) < segments):
        s = int(min(s + rng.integers(0, max(1, seg // 4)), len(x) - seg))  # off the window grid
        segs.append(x[s:s + seg])
        ys.append(1)
        ctx = x[max(0, s - pre):s + seg]
        for _ in range(copies):
            chain = draw_chain(rng, sr, allowed, max_chain)
            segs.append(apply_chain(ctx, sr, chain)[-seg:])
            ys.append(0)
            chains.append(chain)
    return segment_features(np.stack(segs), sr, n_mels), np.array(ys), chains


def stem_segment_features(audio: np.ndarray, sr: int, seg_s: float, n: int, n_mels: int) -> np.ndarray:
    """Features of up to ``n`` evenly spread audible segments of a stem (0 rows when it is silent)."""
    seg = int(seg_s * sr)
    x = _mono(audio, seg)
    starts = audible_starts(x, seg)
    if not len(starts):
        return np.zeros((0, 0))
    pick = starts[np.unique(np.linspace(0, len(starts) - 1, n).round().astype(int))]
    return segment_features(np.stack([x[s:s + seg] for s in pick]), sr, n_mels)


# ----------------------------------------------------------------------------------------------- cleaner

def trimmed(scores: np.ndarray, labels: np.ndarray, share: float) -> np.ndarray:
    """Which stems stay: all but the ``share`` of each label's stems with the lowest scores (silent stems stay)."""
    keep = np.ones(len(scores), dtype=bool)
    for lb in np.unique(labels):
        rows = np.flatnonzero((labels == lb) & np.isfinite(scores))
        drop = int(np.floor(share * len(rows)))
        keep[rows[np.argsort(scores[rows], kind="stable")[:drop]]] = False
    return keep


def _label_columns(labels, n: int) -> np.ndarray:
    return np.array([[float(lb == k) for k in LABELS] for lb in labels], dtype=np.float64).reshape(n, len(LABELS))


@register
class DegradeCleaner(Cleaner):
    name = "degrade"
    probability = True  # P(unprocessed): fusion reads its evidence as log-odds
    needs = ("audio",)
    defaults = {"segment_s": 2.0, "segments": 16, "copies": 3, "score_segments": 8, "max_chain": 2, "n_mels": 40,
                "exclude": [], "label_feature": True, "iterations": 300, "learning_rate": 0.1, "min_leaf": 0.06,
                "max_features": 0.15, "song": "min", "null_folds": 4, "positives": "reference", "collection_segments": 8,
                "collection_songs": 100, "trim": 0.0, "trim_rounds": 0, "segment_pool": "mean"}
    POSITIVES = ("reference", "collection")

    def _check(self) -> dict:
        o = self.options
        if not isinstance(o["exclude"], (list, tuple)):
            raise CleanerError(f"cleaners.degrade.exclude: expected a list of family or member names, got {o['exclude']!r}")
        try:
            allowed = allowed_members([str(e) for e in o["exclude"]])
        except ValueError as e:
            raise CleanerError(f"cleaners.degrade.exclude: {e}") from None
        if o["song"] not in ("min", "mean"):
            raise CleanerError(f"cleaners.degrade.song: {o['song']!r} is not one of min, mean")
        if not isinstance(o["null_folds"], int) or isinstance(o["null_folds"], bool) or o["null_folds"] < 0:
            raise CleanerError(f"cleaners.degrade.null_folds: expected 0 (no null) or a number of folds, got {o['null_folds']!r}")
        if o["segment_pool"] not in ("mean", "median"):
            raise CleanerError(f"cleaners.degrade.segment_pool: {o['segment_pool']!r} is not one of mean, median")
        if o["positives"] not in self.POSITIVES:
            raise CleanerError(f"cleaners.degrade.positives: {o['positives']!r} is not one of {', '.join(self.POSITIVES)}")
        if o["positives"] == "collection" and o["null_folds"] < 2:
            raise CleanerError(f"cleaners.degrade.null_folds: positives: collection cross-fits over song folds and needs "
                               f"2 or more, got {o['null_folds']!r}")
        if not isinstance(o["trim_rounds"], int) or isinstance(o["trim_rounds"], bool) or o["trim_rounds"] < 0:
            raise CleanerError(f"cleaners.degrade.trim_rounds: expected 0 (no trimming) or a number of rounds, got {o['trim_rounds']!r}")
        if not 0 <= float(o["trim"]) < 1:
            raise CleanerError(f"cleaners.degrade.trim: expected a share in [0, 1), got {o['trim']!r}")
        for key in ("segments", "copies", "score_segments", "max_chain", "n_mels", "iterations", "collection_segments",
                    "collection_songs"):
            if not isinstance(o[key], int) or isinstance(o[key], bool) or o[key] < 1:
                raise CleanerError(f"cleaners.degrade.{key}: expected a positive integer, got {o[key]!r}")
        for key in ("min_leaf", "max_features"):
            if not 0 < float(o[key]) <= 1:
                raise CleanerError(f"cleaners.degrade.{key}: expected a share in (0, 1], got {o[key]!r}")
        if not float(o["segment_s"]) > 0.1:
            raise CleanerError(f"cleaners.degrade.segment_s: expected seconds > 0.1, got {o['segment_s']!r}")
        return allowed

    def train(self, view: StemView):
        """The classifier, trained on the reference split only; ``self.chains`` keeps every chain drawn."""
        X, y, _ = self._examples(view)
        return self._fit(X, y)

    def _examples(self, view: StemView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training rows from the reference stems: features, y (1 = as it is), and the song each row came from."""
        ref = view.reference
        self.chains = []
        if not len(ref):
            raise CleanerError("degrade: the reference split is empty (nothing clean to learn from)")
        X, y, stem = self._stem_examples(view, ref, self.options["segments"], np.random.SeedSequence(self.seed))
        if not len(X):
            raise CleanerError("degrade: every reference stem is silent (nothing clean to learn from)")
        return X, y, ref.track_id.to_numpy()[stem]

    def _stem_examples(self, view: StemView, rows: pd.DataFrame, segments: int, seeds: np.random.SeedSequence
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, y (1 = as it is) and the row (position in ``rows``) of each example drawn from ``rows``' stems;
        every chain drawn is added to ``self.chains`` (started by ``_examples``, which always runs first)."""
        allowed = self._check()
        o, sr = self.options, int(view.sample_rate)
        items = ((view.load_audio(t, lb), lb, int(s.generate_state(1)[0]))
                 for t, lb, s in zip(rows.track_id, rows.label, seeds.spawn(len(rows))))
        fn = partial(reference_examples, sr=sr, seg_s=float(o["segment_s"]), segments=segments, copies=o["copies"],
                     allowed=allowed, max_chain=o["max_chain"], n_mels=o["n_mels"])
        X, y, stem = [], [], []
        for i, (lb, (f, t, chains)) in enumerate(zip(rows.label, view.map(fn, items))):
            if len(t):
                X.append(np.hstack([f, _label_columns([lb] * len(t), len(t))]) if o["label_feature"] else f)
                y.append(t)
                stem += [i] * len(t)
                self.chains += chains
        if not X:
            return np.zeros((0, 0)), np.zeros(0), np.zeros(0, dtype=int)
        return np.concatenate(X), np.concatenate(y), np.array(stem)

    def _fit(self, X: np.ndarray, y: np.ndarray):
        from sklearn.ensemble import HistGradientBoostingClassifier

        o = self.options
        model = HistGradientBoostingClassifier(max_iter=o["iterations"], learning_rate=float(o["learning_rate"]),
                                               min_samples_leaf=max(1, int(float(o["min_leaf"]) * len(X))),
                                               max_features=float(o["max_features"]),
                                               l2_regularization=1.0, early_stopping=False, random_state=self.seed)
        # Large leaves and few features per split: the positives are only the reference stems, and a sharp model
        # learns "one of these sounds" instead of "processed" (unseen clean instruments then score as processed).
        # Unweighted (ranking needs no balance; sample weights make sklearn bin by weighted percentiles: 40 s here),
        # one OpenMP thread (the cores are shared; two gain little on a few thousand rows).
        with threadpool_limits(1, user_api="openmp"):
            return model.fit(X, y)

    def _stem_scores(self, model, view: StemView, rows: pd.DataFrame) -> np.ndarray:
        """P(unprocessed) of each stem in ``rows``, averaged over its evenly spread segments (NaN: silent); a stem's
        segment features are computed once per scoring (``self._features``, started by ``score_stems``)."""
        o, sr = self.options, int(view.sample_rate)
        cache = getattr(self, "_features", {})
        todo = [(t, lb) for t, lb in zip(rows.track_id, rows.label) if (t, lb) not in cache]
        fn = partial(stem_segment_features, sr=sr, seg_s=float(o["segment_s"]), n=o["score_segments"], n_mels=o["n_mels"])
        cache.update(zip(todo, view.map(fn, (view.load_audio(t, lb) for t, lb in todo))))
        scores = np.full(len(rows), np.nan)
        feats = [(i, f, lb) for i, (t, lb) in enumerate(zip(rows.track_id, rows.label)) if len(f := cache[(t, lb)])]
        if not feats:
            return scores
        X = np.vstack([np.hstack([f, _label_columns([lb] * len(f), len(f))]) if o["label_feature"] else f
                       for _, f, lb in feats])
        with threadpool_limits(1, user_api="openmp"):
            p = model.predict_proba(X)[:, 1]  # one call: per call, the trees cost more than a stem's rows
        ends = np.cumsum([len(f) for _, f, _ in feats])
        pool = np.median if o["segment_pool"] == "median" else np.mean  # median: one odd segment of a clean stem is outvoted
        for (i, _, _), a, b in zip(feats, np.concatenate([[0], ends[:-1]]), ends):
            scores[i] = pool(p[a:b])
        return scores

    def _null(self, view: StemView, X: np.ndarray, y: np.ndarray, songs: np.ndarray) -> pd.DataFrame | None:
        """Each reference stem scored by a model trained without its song (K folds of reference songs, cross-fitting)."""
        ref = view.reference
        names = np.unique(songs)
        folds = min(int(self.options["null_folds"]), len(names))
        if folds < 2:
            return None
        held = np.array_split(np.random.default_rng(self.seed).permutation(names), folds)
        parts = []
        for out in held:
            rows, fit_on = ref[ref.track_id.isin(out)], ~np.isin(songs, out)
            model = self._fit(X[fit_on], y[fit_on])
            parts.append(rows[["track_id", "label"]].assign(score=self._stem_scores(model, view, rows)))
        null = pd.concat(parts, ignore_index=True).dropna()
        return null if len(null) else None

    def _score_collection(self, view: StemView) -> np.ndarray:
        """``positives: collection``: reference and training stems as positives, cross-fitted over song folds."""
        o = self.options
        ref, train = view.reference.reset_index(drop=True), view.train.reset_index(drop=True)
        Xr, yr, songs_r = self._examples(view)
        learnt = train[train.track_id.isin(sample_songs(train.track_id, o["collection_songs"], self.seed))]
        Xt, yt, rt = self._stem_examples(view, learnt, o["collection_segments"], np.random.SeedSequence(self.seed + 1))
        rt = learnt.index.to_numpy()[rt] if len(rt) else rt  # example -> row of ``train``
        songs = np.unique(np.concatenate([ref.track_id.unique(), train.track_id.unique()]))
        fold_of = dict(zip(np.random.default_rng(self.seed).permutation(songs), np.arange(len(songs)) % o["null_folds"]))
        fr, ft = ref.track_id.map(fold_of).to_numpy(), train.track_id.map(fold_of).to_numpy()
        example_fold_r = np.array([fold_of[t] for t in songs_r])
        kept = np.ones(len(train), dtype=bool)  # training stems whose examples the next round learns from
        self.rounds = []
        for _ in range(1 + o["trim_rounds"]):
            scores, null = np.full(len(train), np.nan), np.full(len(ref), np.nan)
            for k in range(o["null_folds"]):
                fit_r, fit_t = example_fold_r != k, (ft[rt] != k) & kept[rt]
                X = np.vstack([Xr[fit_r]] + ([Xt[fit_t]] if fit_t.any() else []))
                model = self._fit(X, np.concatenate([yr[fit_r], yt[fit_t]]))
                scores[ft == k] = self._stem_scores(model, view, train[ft == k])
                null[fr == k] = self._stem_scores(model, view, ref[fr == k])
            self.rounds.append(scores.copy())
            kept = trimmed(scores, train.label.to_numpy(), float(o["trim"]))
        held = ref[["track_id", "label"]].assign(score=null).dropna()
        self.null = held if len(held) else None
        return scores

    def score_stems(self, view: StemView) -> np.ndarray:
        t0 = time.perf_counter()
        self._features = {}
        if self.options["positives"] == "collection":
            scores = self._score_collection(view)  # the fits and the scoring interleave: train_seconds holds both
            self.train_seconds = time.perf_counter() - t0
        else:
            X, y, songs = self._examples(view)
            model = self._fit(X, y)
            self.train_seconds = time.perf_counter() - t0
            scores = self._stem_scores(model, view, view.train)
            self.null = self._null(view, X, y, songs)
        scores[np.isnan(scores)] = np.nanmedian(scores) if np.isfinite(scores).any() else 0.5  # silent: no evidence
        del self._features
        return scores

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        g = stems.groupby("track_id").score
        return g.min() if self.options["song"] == "min" else g.mean()

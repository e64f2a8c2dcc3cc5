"""Typed views of params.yaml: one dataclass per stage block; unknown or mistyped keys fail in one line."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """A bad params.yaml value; the message names the file and the key."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root or pass --params)") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of stage blocks")
    if base := params.pop("extends", None):  # a workspace's params over another's (curate/params.yaml over params.yaml)
        params = merge_params(load_params(path.parent / base), params)
    params["_path"] = str(path)
    return params


def merge_params(base: dict, over: dict) -> dict:
    """``over``'s keys over ``base``, mappings merged key by key (a list or value replaces the base's)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge_params(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def params_hash(block: Any) -> str:
    """Short stable hash of a params block (keys sorted), for naming configs in the catalogue."""
    return hashlib.sha1(json.dumps(block, sort_keys=True, default=str).encode()).hexdigest()[:12]


# What a value of each annotated type may be in YAML or `dvc exp run -S` (a str field may come as 0.5: YAML's float).
_ACCEPT = {"int": (int,), "float": (int, float), "str": (str, int, float), "bool": (bool,), "dict": (dict,),
           "list": (list,), "None": (type(None),)}


def _check_type(f: dataclasses.Field, value, where: str) -> None:
    """A value of the wrong type (a list for a number, NaN for a rate, ...) fails here, naming its key, instead of
    as a TypeError deep inside a stage."""
    kinds = [k.strip().split("[")[0] for k in str(f.type).split("|")]
    if not all(k in _ACCEPT for k in kinds):
        return  # an annotation this check does not know: the block's own check() decides
    ok = tuple(t for k in kinds for t in _ACCEPT[k])
    if isinstance(value, bool) and bool not in ok or not isinstance(value, ok):
        raise ParamsError(f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__} {str(value)[:40]!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ParamsError(f"{where}: must be a finite number, got {value}")


def _build(cls, block: dict | None, where: str):
    if block is not None and not isinstance(block, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {type(block).__name__} {str(block)[:40]!r}")
    block = dict(block or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(block) - set(names), key=str)
    if unknown:
        raise ParamsError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(names)})")
    kwargs = {}
    for key, value in block.items():
        sub = names[key].metadata.get("block")
        if not sub:
            _check_type(names[key], value, f"{where}.{key}")
        kwargs[key] = _build(sub, value, f"{where}.{key}") if sub else value
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ParamsError(f"{where}: {e}") from None
    try:
        obj.check(where)
    except ParamsError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:  # e.g. a list inside a dict value
        raise ParamsError(f"{where}: bad value ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return obj


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ParamsError(f"{where}: {msg}")


@dataclass(frozen=True)
class SyntheticParams:
    soundfont: str = "default"  # 'default' = pretty_midi's TimGM6mb.sf2, or a path to .sf2/.sf3
    duration: float = 20.0
    chorale_share: float = 0.3
    texture: str = "pop"        # pop | chorale | folk | independent | groove (stemsift.data.textures)
    level_spread_db: float = 0.0  # extra per-stem level, uniform +-spread dB (0 = the pop-mix balance only)
    tracks: dict = field(default_factory=lambda: {"train": 100, "reference": 20, "test": 20})

    def check(self, where: str) -> None:
        from stemsift.data.textures import TEXTURES

        _need(float(self.duration) > 0, f"{where}.duration", "must be > 0 seconds")
        _need(0 <= float(self.chorale_share) <= 1, f"{where}.chorale_share", "must be in [0, 1]")
        _need(self.texture in TEXTURES, f"{where}.texture", f"unknown texture {self.texture!r} (use {', '.join(TEXTURES)})")
        _need(float(self.level_spread_db) >= 0, f"{where}.level_spread_db", "must be >= 0 dB")
        from stemsift import SPLITS

        bad = set(self.tracks) - set(SPLITS)
        _need(not bad, f"{where}.tracks", f"unknown split {sorted(bad)[0] if bad else ''!r} (use {', '.join(SPLITS)})")
        _need(all(isinstance(n, int) and n >= 0 for n in self.tracks.values()), f"{where}.tracks", "counts must be integers >= 0")
        _need(sum(self.tracks.values()) > 0, f"{where}.tracks", "at least one track is needed")


@dataclass(frozen=True)
class IngestParams:
    reference_tracks: int = 20  # moved from `reference_from` into the clean reference split (no reference/ folder)
    reference_from: str = "test"  # auto: test when it has enough songs, else a fifth of train at most (curate path)

    def check(self, where: str) -> None:
        _need(int(self.reference_tracks) >= 0, f"{where}.reference_tracks", "must be >= 0")
        _need(self.reference_from in ("train", "test", "auto"), f"{where}.reference_from", "must be train, test or auto")


@dataclass(frozen=True)
class MoisesDBParams:
    # label -> MoisesDB categories summed into it; every category not listed goes to `other`
    mapping: dict = field(default_factory=lambda: {"vocals": ["vocals"], "bass": ["bass"], "drums": ["drums"]})
    test_tracks: int = 0        # MoisesDB has no splits: tracks drawn (seeded) into test; ingest.reference_tracks likewise

    def check(self, where: str) -> None:
        from stemsift import LABELS

        _need(isinstance(self.mapping, dict) and set(self.mapping) <= set(LABELS), f"{where}.mapping",
              f"must map labels ({', '.join(LABELS)}) to lists of MoisesDB categories")
        _need(int(self.test_tracks) >= 0, f"{where}.test_tracks", "must be >= 0")


@dataclass(frozen=True)
class DataParams:
    source: str = "synthetic"
    seed: int = 0
    sample_rate: int = 16000
    channels: int = 1           # mono default, as params.yaml
    format: str = "flac"
    workers: int = 2
    out: str = "data/raw"
    synthetic: SyntheticParams = field(default_factory=SyntheticParams, metadata={"block": SyntheticParams})
    ingest: IngestParams = field(default_factory=IngestParams, metadata={"block": IngestParams})
    moisesdb: MoisesDBParams = field(default_factory=MoisesDBParams, metadata={"block": MoisesDBParams})

    def check(self, where: str) -> None:
        _need(isinstance(self.sample_rate, int) and 4000 <= self.sample_rate <= 192000, f"{where}.sample_rate", "must be an integer in Hz (4000..192000)")
        _need(self.channels in (1, 2), f"{where}.channels", "must be 1 or 2")
        _need(self.format in ("flac", "wav"), f"{where}.format", "must be flac or wav")
        _need(int(self.workers) >= 1, f"{where}.workers", "must be >= 1")


@dataclass(frozen=True)
class ContaminateParams:
    preset: str = "mixed"  # mixed | mixed25 | effects | labels | blend | harm | none
    seed: int = 0
    out: str = "data/contaminated"
    label_noise: dict = field(default_factory=dict)
    bleeding: dict = field(default_factory=dict)
    effects: dict = field(default_factory=dict)
    loudness: dict = field(default_factory=dict)  # song_db, peak: the same level treatment for every training song

    def check(self, where: str) -> None:
        from stemsift.data.defects import PRESETS, resolve_config

        _need(self.preset in PRESETS, f"{where}.preset", f"unknown preset {self.preset!r} (use {', '.join(PRESETS)})")
        try:
            resolve_config(self.defect_config())
        except ValueError as e:
            raise ParamsError(f"{where}: {e}") from None

    def defect_config(self) -> dict:
        return {"label_noise": self.label_noise, "bleeding": self.bleeding, "effects": self.effects,
                "loudness": self.loudness}


@dataclass(frozen=True)
class CatalogueParams:
    out: str = "data/catalogue.duckdb"

    def check(self, where: str) -> None:
        _need(str(self.out).endswith(".duckdb"), f"{where}.out", "must end in .duckdb")


def stage_params(params: dict, name: str, cls):
    """The typed block ``name`` of a loaded params.yaml (defaults where the block is absent)."""
    return _build(cls, params.get(name), f"{params.get('_path', 'params.yaml')}: {name}")


TRAIN_SETS = ("baseline", "cleaned", "refined", "oracle", "reference")


@dataclass(frozen=True)
class EmbedParams:
    embedder: str = "mel"       # mel | crepe | cdpam | clap | mert (stemsift.embed registry)
    device: str = "auto"        # auto | cpu | cuda
    splits: list = field(default_factory=lambda: ["train", "reference"])
    out: str = "data/embeddings"  # one folder per embedder, files named by stem sha1
    mel: dict = field(default_factory=dict)
    crepe: dict = field(default_factory=dict)
    clap: dict = field(default_factory=dict)
    mert: dict = field(default_factory=dict)
    cdpam: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        from stemsift import SPLITS
        from stemsift.embed import REGISTRY

        _need(self.embedder in REGISTRY, f"{where}.embedder", f"unknown embedder {self.embedder!r} (use {', '.join(REGISTRY)})")
        _need(self.device in ("auto", "cpu", "cuda"), f"{where}.device", "must be auto, cpu or cuda")
        _need(set(self.splits) <= set(SPLITS) and "train" in self.splits and "reference" in self.splits,
              f"{where}.splits", f"must include train and reference (known: {', '.join(SPLITS)})")

    def options(self) -> dict:
        return dict(getattr(self, self.embedder, {}) or {})

    @property
    def folder(self) -> Path:
        return Path(self.out) / self.embedder


@dataclass(frozen=True)
class ScoreParams:
    cleaner: str = "fad"        # the cleaner whose scores filter the `cleaned` training set; none keeps everything
    cleaners: list = field(default_factory=lambda: ["random", "fad", "mlp", "confident"])  # scored and compared
    seed: int = 0
    report_ratios: list = field(default_factory=lambda: [0.5, 0.75, 0.9])  # keep ratios of metrics/cleaning.json
    out: str = "data/scores"

    def check(self, where: str) -> None:
        from stemsift.clean import REGISTRY

        _need(isinstance(self.cleaners, list), f"{where}.cleaners", "must be a list of cleaner names")
        for name in [self.cleaner, *self.cleaners]:
            _need(name == "none" or name in REGISTRY, f"{where}.cleaner",
                  f"unknown cleaner {name!r} (use none, {', '.join(REGISTRY)})")
        _need(all(0 < float(r) <= 1 for r in self.report_ratios), f"{where}.report_ratios", "must be in (0, 1]")


@dataclass(frozen=True)
class SelectParams:
    out: str = "data/selections"  # selections of the fixed training sets: baseline, oracle, reference

    def check(self, where: str) -> None:
        pass


@dataclass(frozen=True)
class AutoRatioParams:
    method: str = "gmm"         # gmm (DivideMix) | beta (Arazo et al. 2019) | storey (p-values) | cleanlab (label-based)
    min_songs: int = 10         # fewer songs: keep all (a mixture cannot be fitted)
    min_separation: float = 2.0  # Ashman's D of the two components below this: unimodal, keep all
    min_weight: float = 0.1     # a component lighter than this (e.g. one far outlier) is no second population: keep all
    storey_lambda: float = 0.5  # storey: p-values above this count as clean songs' (Storey 2002)

    def check(self, where: str) -> None:
        from stemsift.clean.ratio import METHODS

        _need(self.method in METHODS, f"{where}.method", f"must be one of {', '.join(METHODS)}")
        _need(isinstance(self.min_songs, int) and self.min_songs >= 2, f"{where}.min_songs", "must be an integer >= 2")
        _need(float(self.min_separation) >= 0, f"{where}.min_separation", "must be >= 0")
        _need(0 <= float(self.min_weight) < 0.5, f"{where}.min_weight", "must be in [0, 0.5)")
        _need(0 < float(self.storey_lambda) < 1, f"{where}.storey_lambda", "must be in (0, 1)")


@dataclass(frozen=True)
class FilterParams:
    ratio: float | str = 0.75   # keep ratio r in (0, 1], or auto: estimated from the song scores (filter.auto)
    mode: str = "unified"       # unified | per_target (Blind'25 section 2.1)
    out: str = "data/filtered"  # the filtered stem set, MUSDB18-HQ layout, hard links into the contaminated set
    verdicts: str | None = None  # CSV of human verdicts (track,stem,verdict) that overrule the scores
    auto: AutoRatioParams = field(default_factory=AutoRatioParams, metadata={"block": AutoRatioParams})

    def check(self, where: str) -> None:
        if self.ratio != "auto":
            try:
                ok = 0 < float(self.ratio) <= 1
            except (TypeError, ValueError):
                ok = False
            _need(ok, f"{where}.ratio", f"must be in (0, 1] or auto, got {self.ratio!r}")
        _need(self.mode in ("unified", "per_target"), f"{where}.mode", "must be unified or per_target")


@dataclass(frozen=True)
class MixITParams:
    outputs: int = 4            # M separator outputs
    assignment: str = "efficient"  # efficient (least squares + projection) | exhaustive (all 2^M remixes)
    snr_max: float = 30.0       # dB, threshold of the negative-SNR loss (tau = 10^(-snr_max/10))
    sparsity: float = 0.0       # weight of the L1/L2 output-activity loss
    covariance: float = 0.0     # weight of the output covariance loss
    semantic: float = 0.0       # weight of the weak-label loss through the frozen classifier Ψ
    consistency: bool = True    # mixture consistency: outputs sum to the input
    classifier: str | None = None  # Ψ folder for the semantic loss and mapping; null = the refine stage's last Ψ

    def check(self, where: str) -> None:
        _need(isinstance(self.outputs, int) and 2 <= self.outputs <= 16, f"{where}.outputs", "must be an integer in 2..16")
        _need(self.assignment in ("efficient", "exhaustive"), f"{where}.assignment", "must be efficient or exhaustive")
        for key in ("sparsity", "covariance", "semantic"):
            _need(float(getattr(self, key)) >= 0, f"{where}.{key}", "must be >= 0")


@dataclass(frozen=True)
class TrainParams:
    model: str = "small"        # small (CPU) | paper (open-unmix UMX size, 44.1 kHz)
    device: str = "auto"        # auto | cpu | cuda
    seeds: list = field(default_factory=lambda: [0, 1])
    epochs: int = 6             # defaults mirror params.yaml (the file always wins)
    steps_per_epoch: int = 25
    batch_size: int = 8
    seq_dur: float = 3.0
    lr: float = 0.001
    weight_decay: float = 0.00001
    lr_decay_patience: int = 3
    lr_decay_gamma: float = 0.3
    patience: int = 4
    valid_segments: int = 2     # fixed segments per reference song for the validation loss
    hidden_size: int | None = None  # overrides of the preset
    nb_layers: int | None = None
    labels: str = "given"       # labels of the `cleaned` set: given | refined (the refine stage's rule)
    method: str = "supervised"  # method of the `cleaned` set: supervised | mixit (mixtures of mixtures only)
    mixit: MixITParams = field(default_factory=MixITParams, metadata={"block": MixITParams})
    workers: int = 2            # seeds trained at once (spawned processes); results do not depend on it
    threads: int | None = 1     # torch threads per training (null: torch's default); part of the result
    out: str = "models"

    def check(self, where: str) -> None:
        from stemsift.separate.model import PRESETS

        _need(self.model in PRESETS, f"{where}.model", f"unknown preset {self.model!r} (use {', '.join(PRESETS)})")
        _need(self.device in ("auto", "cpu", "cuda"), f"{where}.device", "must be auto, cpu or cuda")
        _need(isinstance(self.seeds, list) and self.seeds and all(isinstance(s, int) for s in self.seeds),
              f"{where}.seeds", "must be a non-empty list of integers")
        for key in ("epochs", "steps_per_epoch", "batch_size", "valid_segments"):
            _need(int(getattr(self, key)) >= 1, f"{where}.{key}", "must be >= 1")
        _need(float(self.seq_dur) > 0, f"{where}.seq_dur", "must be > 0 seconds")
        _need(self.labels in ("given", "refined"), f"{where}.labels", "must be given or refined")
        _need(self.method in ("supervised", "mixit"), f"{where}.method", "must be supervised or mixit")
        _need(isinstance(self.workers, int) and self.workers >= 1, f"{where}.workers", "must be an integer >= 1")
        _need(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1), f"{where}.threads",
              "must be null or an integer >= 1")


@dataclass(frozen=True)
class EvaluateParams:
    workers: int = 2            # processes for museval (results equal the serial ones)
    niter: int = 1              # Wiener EM iterations in the Separator (open-unmix default 1)
    out: str = "metrics"

    def check(self, where: str) -> None:
        _need(int(self.workers) >= 1, f"{where}.workers", "must be >= 1")
        _need(int(self.niter) >= 0, f"{where}.niter", "must be >= 0")


@dataclass(frozen=True)
class RefineParams:
    classifier: str = "small"   # small (CPU ConvNeXt) | paper (ConvNeXt-T, 44.1 kHz)
    depths: list | None = None  # overrides of the preset (timm ConvNeXt depths / dims)
    dims: list | None = None
    steps: int = 1200           # training steps of each classifier (random mixes, batch_size each)
    batch_size: int = 32
    lr: float = 0.001
    weight_decay: float = 0.05
    include_prob: float = 0.5   # chance each class contributes a stem to a random mix
    effects_prob: float = 0.3   # chance a mix passes through one random pedalboard effect
    iterations: int = 2         # refinement rounds after iteration 0 (Koo'23: 2 are enough)
    threshold: str = "0.5"      # 0.5 | 0.9 | adaptive (per-class F1-best on the clean reference split)
    seed: int = 0
    device: str = "auto"        # auto | cpu | cuda
    clean_oracle: bool = False  # also train Ψ on the true labels (truth used only for this metric)
    out: str = "data/refined"

    def check(self, where: str) -> None:
        from stemsift.classify.model import PRESETS

        _need(self.classifier in PRESETS, f"{where}.classifier", f"unknown preset {self.classifier!r} (use {', '.join(PRESETS)})")
        _need(str(self.threshold) in ("0.5", "0.9", "adaptive"), f"{where}.threshold", "must be 0.5, 0.9 or adaptive")
        _need(int(self.iterations) >= 0, f"{where}.iterations", "must be >= 0")
        for key in ("steps", "batch_size"):
            _need(int(getattr(self, key)) >= 1, f"{where}.{key}", "must be >= 1")
        for key in ("include_prob", "effects_prob"):
            _need(0 <= float(getattr(self, key)) <= 1, f"{where}.{key}", "must be in [0, 1]")
        _need(self.device in ("auto", "cpu", "cuda"), f"{where}.device", "must be auto, cpu or cuda")


@dataclass(frozen=True)
class AuditParams:
    stemset: str | None = None  # the stem set audited; null = data.out (the ingested set)
    near_threshold: float = 0.9  # fingerprint correlation at the best lag that makes a near duplicate
    max_shift_s: float = 1.0    # time shifts searched
    candidates: int = 5         # near-duplicate candidates per song (global fingerprint), each then verified
    mixture_tol_db: float = -30.0  # residual of mixture - sum of stems (dB re mixture) above this is reported
    clip_samples: int = 16      # samples at full scale that make a stem clipped
    out: str = "data/audit"

    def check(self, where: str) -> None:
        _need(0 < float(self.near_threshold) <= 1, f"{where}.near_threshold", "must be in (0, 1]")
        _need(float(self.max_shift_s) >= 0, f"{where}.max_shift_s", "must be >= 0 seconds")
        _need(int(self.candidates) >= 1, f"{where}.candidates", "must be >= 1")
        _need(int(self.clip_samples) >= 1, f"{where}.clip_samples", "must be >= 1")


@dataclass(frozen=True)
class ListenParams:
    cleaners: list = field(default_factory=list)  # cleaners reported besides score.cleaner (each in score.cleaners)
    songs: int = 12             # lowest-scored songs per cleaner
    excerpt_s: float = 6.0      # seconds per audio excerpt (the loudest part of the song)
    out: str = "reports/listen"

    def check(self, where: str) -> None:
        _need(isinstance(self.cleaners, list), f"{where}.cleaners", "must be a list of cleaner names")
        _need(int(self.songs) >= 1, f"{where}.songs", "must be >= 1")
        _need(float(self.excerpt_s) > 0, f"{where}.excerpt_s", "must be > 0 seconds")


@dataclass(frozen=True)
class ComputeParams:
    executor: str = "local"     # local (this machine: `workers` processes) | ray (one Ray task per item; stemsift.compute)
    address: str | None = None  # Ray address: auto | host:port | ray://host:10001; null = a private local Ray instance
    cpus_per_task: float = 1.0
    gpus_per_task: float = 1.0  # asked for only when the cluster reports GPUs (fractions share a GPU)
    max_in_flight: int = 64     # tasks submitted at once (bounds the driver's memory)
    workers: int = 1            # local executor: processes, one thread each (1: an in-process loop)

    def check(self, where: str) -> None:
        from stemsift.compute import EXECUTORS

        _need(self.executor in EXECUTORS, f"{where}.executor", f"unknown executor {self.executor!r} (use {', '.join(EXECUTORS)})")
        _need(self.address is None or (isinstance(self.address, str) and self.address.strip() != ""),
              f"{where}.address", "must be null or a Ray address (auto, host:port, ray://host:port)")
        _need(isinstance(self.cpus_per_task, (int, float)) and self.cpus_per_task > 0, f"{where}.cpus_per_task", "must be > 0")
        _need(isinstance(self.gpus_per_task, (int, float)) and self.gpus_per_task >= 0, f"{where}.gpus_per_task", "must be >= 0")
        _need(isinstance(self.max_in_flight, int) and self.max_in_flight >= 1, f"{where}.max_in_flight", "must be an integer >= 1")
        _need(isinstance(self.workers, int) and not isinstance(self.workers, bool) and self.workers >= 1, f"{where}.workers",
              "must be an integer >= 1 (1: work in this process)")

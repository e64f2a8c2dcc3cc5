"""Cleaners, keep-ratio selection and detection metrics on a tiny generated stem set with known defects."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import linalg

from stemsift import LABELS
from stemsift.clean import REGISTRY, CleanerError, StemView, get_cleaner
from stemsift.clean.fad import frechet_distance, gaussian
from stemsift.clean.metrics import detection
from stemsift.clean.select import filtered_selection, kept_songs
from stemsift.embed import get_embedder
from stemsift.embed.cache import EmbeddingStore, embed_stemset
from stemsift.separate.selection import given_selection, pools
from stemsift.params import FilterParams
from stemsift.stages.filter import cleaned_selection, write_filtered
from stemsift.stemset import StemSet, StemSetWriter

from conftest import make_stems

SR = 8000
MEL = {"sample_rate": SR, "n_fft": 512, "hop": 256, "n_mels": 32}
SWAPPED, BLED = "train-00", "train-01"   # vocals<->bass swapped; drums leaked into vocals at 0 dB


def build_set(root, n_train: int = 10, n_ref: int = 6):
    w = StemSetWriter(root, SR, 1)
    truth = []
    for i in range(n_ref):
        w.add_track(f"ref-{i:02d}", "reference", {k: v[:, :1] for k, v in make_stems(100 + i, 2.0, SR, 1).items()})
    for i in range(n_train):
        tid = f"train-{i:02d}"
        s = {k: v[:, :1] for k, v in make_stems(i, 2.0, SR, 1).items()}
        defect = {lb: "clean" for lb in LABELS}
        if tid == SWAPPED:
            s["vocals"], s["bass"] = s["bass"], s["vocals"]
            defect.update(vocals="label_noise", bass="label_noise")
        if tid == BLED:
            s["vocals"] = s["vocals"] + 2 * s["drums"]
            defect.update(vocals="bleeding")
        w.add_track(tid, "train", s, meta={"defect": "x" if tid in (SWAPPED, BLED) else "clean"})
        truth += [(tid, lb, d, {"label_noise": "swap"}.get(d, d if d != "clean" else "")) for lb, d in defect.items()]
    ss = w.close()
    pd.DataFrame(truth, columns=["track_id", "label", "defect", "kind"]).to_parquet(root / "truth.parquet")
    return ss


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    ss = build_set(root / "contaminated")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEMSIFT_CACHE", str(root / "memo"))
        embed_stemset(ss, get_embedder("mel", MEL), root / "emb", ["train", "reference"])
        yield ss, EmbeddingStore(root / "emb"), pd.read_parquet(root / "contaminated" / "truth.parquet")


def test_fad_matches_scipy_and_is_zero_for_the_same_distribution():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((4000, 6)) @ rng.standard_normal((6, 6)) + 0.5
    (m1, c1), (m2, c2) = gaussian(a), gaussian(b)
    direct = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(direct, rel=1e-6)
    assert frechet_distance(m1, c1, m1, c1) == pytest.approx(0, abs=1e-8)
    # rank-deficient (fewer frames than dims): never negative or complex, and finite
    low = gaussian(rng.standard_normal((3, 6)), shrinkage=0.01)
    d = frechet_distance(*low, m1, c1)
    assert np.isfinite(d) and d >= 0


@pytest.mark.parametrize("name", ["fad", "mlp", "confident"])
def test_each_cleaner_ranks_the_corrupted_stems_below_the_clean_ones(world, name):
    ss, store, truth = world
    table = get_cleaner(name, {"epochs": 5} if name != "fad" else {}, seed=0).score(StemView.of(ss, store))
    t = table.merge(truth, on=["track_id", "label"])
    clean = t[t.defect == "clean"]
    swapped = t[(t.track_id == SWAPPED) & t.label.isin(["vocals", "bass"])]
    assert swapped.score.max() < clean.score.min(), t.sort_values("score").head(6)
    if name == "fad":  # a stem that is 2/3 drums is also far from the clean vocals
        assert t[(t.track_id == BLED) & (t.label == "vocals")].score.iloc[0] < clean.score.min()
    songs = table.groupby("track_id").song_score.first()
    # strictly below every other song (a constant-score cleaner ties, and pandas' tie order puts train-00 first)
    assert songs[[SWAPPED, BLED]].min() < songs.drop([SWAPPED, BLED]).min(), songs.sort_values()


def test_random_cleaner_is_seeded_and_scores_every_stem(world):
    ss, store, _ = world
    a, b = (get_cleaner("random", seed=s).score(StemView.of(ss)) for s in (0, 0))
    c = get_cleaner("random", seed=1).score(StemView.of(ss))
    assert a.equals(b) and not a.score.equals(c.score) and len(a) == len(ss.track_ids("train")) * 4


def test_cleaners_are_registered_and_reject_unknown_options():
    assert {"random", "fad", "mlp", "confident"} <= set(REGISTRY)
    with pytest.raises(CleanerError, match="fad.bogus: unknown option"):
        get_cleaner("fad", {"bogus": 1})
    with pytest.raises(CleanerError, match="unknown cleaner 'nope'"):
        get_cleaner("nope")


# options that keep every registered cleaner small on this set (2 s songs at 8 kHz); `tmp` = the test's folder
SMALL = {"loss": lambda tmp: {"model": str(tmp / "models" / "baseline"), "seq_dur": 0.5, "segments": 2, "device": "cpu"},
         "unlearning": lambda tmp: {"model": str(tmp / "models" / "baseline"), "seq_dur": 0.5, "device": "cpu"},
         "selfrefine": lambda tmp: {"folder": str(tmp / "refined")},
         "mlp": lambda tmp: {"epochs": 2}, "confident": lambda tmp: {"epochs": 2, "folds": 2}}


def baseline_and_refined(ss: StemSet, tmp) -> None:
    """What the stages before `score` leave for the cleaners that read more than the view: an initialised tiny
    baseline separator (models/baseline/seed0) and a refine-stage table of class probabilities."""
    import torch

    from stemsift.clean.selfrefine import REFINED
    from stemsift.separate.model import ModelConfig, build, save

    torch.manual_seed(0)
    cfg = ModelConfig(sample_rate=SR, n_fft=256, n_hop=64, hidden_size=16, nb_layers=1, nb_channels=1)
    save({t: build(cfg) for t in LABELS}, cfg, tmp / "models" / "baseline" / "seed0")
    rng = np.random.default_rng(0)
    rows = ss.stems[ss.stems.split == "train"][["track_id", "label"]]
    probs = rng.dirichlet(np.ones(len(LABELS)), len(rows))
    (tmp / "refined").mkdir()
    rows.assign(iteration=0, **{f"p_{c}": probs[:, k] for k, c in enumerate(LABELS)}).to_parquet(tmp / "refined" / REFINED)


def score_every_cleaner(view: StemView, tmp) -> dict[str, pd.DataFrame]:
    from stemsift.stages.score import scoring_order

    params = {"cleaners": {n: SMALL.get(n, lambda t: {})(tmp) for n in REGISTRY}}
    for name in scoring_order(params, sorted(REGISTRY), 0):  # fusion cleaners after their components
        view.scores[name] = get_cleaner(name, params["cleaners"][name], seed=0).score(view)
    return view.scores


def test_truth_never_reaches_a_cleaner(world, tmp_path):
    """Every registered cleaner scores the same stems identically without the truth file and without the track
    metadata that names the defects: none of them reads either, by any path."""
    ss, store, _ = world
    view = StemView.of(ss, store)
    assert "meta" not in view.train.columns and "defect" not in view.train.columns
    baseline_and_refined(ss, tmp_path)
    blind = tmp_path / "blind"
    shutil.copytree(ss.root, blind)
    (blind / "truth.parquet").unlink()
    tracks = pd.read_parquet(blind / "tracks.parquet").assign(meta="{}")
    tracks.to_parquet(blind / "tracks.parquet", index=False)
    a = score_every_cleaner(view, tmp_path)
    b = score_every_cleaner(StemView.of(StemSet(blind), store), tmp_path)
    assert set(a) == set(REGISTRY)
    for name in REGISTRY:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def reachable(obj, seen: set | None = None):
    """Every object the view leads to through attributes, bound-method selves, closures, wrapped functions,
    partials and containers (not through a function's module globals: those lead to every loaded module)."""
    import functools
    import types
    from pathlib import Path

    seen = set() if seen is None else seen
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (types.ModuleType, type, int, float, bool, bytes, np.ndarray, type(None))):
            continue
        seen.add(id(o))
        yield o
        if isinstance(o, (str, Path)):
            continue
        if isinstance(o, pd.DataFrame):
            stack.append(list(o.columns))
            stack += [v for c in o.columns if o[c].dtype == object for v in o[c]]
            continue
        if isinstance(o, dict):
            stack += list(o.keys()) + list(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack += list(o)
        if isinstance(o, types.MethodType):
            stack += [o.__self__, o.__func__]
        if isinstance(o, types.FunctionType):
            stack += [c.cell_contents for c in (o.__closure__ or ())] + list(o.__defaults__ or ())
            stack += list((o.__kwdefaults__ or {}).values())
        if isinstance(o, functools.partial):
            stack += [o.func, *o.args, *o.keywords.values()]
        for name in ("__self__", "__wrapped__", "__func__"):
            if not isinstance(o, (types.FunctionType, types.MethodType)) and hasattr(o, name):
                stack.append(getattr(o, name))
        stack += list(getattr(o, "__dict__", {}).values())
        for cls in type(o).__mro__:
            stack += [getattr(o, s) for s in getattr(cls, "__slots__", ()) if hasattr(o, s)]


def test_the_view_leads_to_no_stem_set_metadata_or_truth(world):
    """The view's audio reader holds stem file paths only: no StemSet (whose `tracks.meta` names the defect and
    whose root holds truth.parquet), no metadata table, no root or truth path, by any attribute; and it pickles
    (compute.executor: ray ships it to workers) and reads what StemSet.load reads."""
    import pickle
    from pathlib import Path

    ss, store, _ = world
    view = StemView.of(ss, store)
    assert not hasattr(view.load_audio, "__self__")  # not the bound StemSet.load; the walk below checks the rest
    root, found = Path(ss.root).resolve(), list(reachable(view))
    assert not [o for o in found if isinstance(o, StemSet)]
    assert not [o for o in found if isinstance(o, pd.DataFrame) and {"meta", "defect", "defect_kind"} & set(o.columns)]
    paths = [Path(o) for o in found if isinstance(o, (str, Path)) and ("/" in str(o) or isinstance(o, Path))]
    assert not [p for p in paths if p.resolve() == root or p.name in ("truth.parquet", "tracks.parquet")]
    assert not [o for o in found if isinstance(o, str) and ("truth" in o or "meta" == o)]
    assert str(root / view.train.path.iloc[0]) in found  # it did walk into the reader: the stem paths are there
    reader = pickle.loads(pickle.dumps(view.load_audio))
    np.testing.assert_array_equal(reader(SWAPPED, "vocals"), ss.load(SWAPPED, "vocals"))
    with pytest.raises(KeyError, match="test"):
        view.load_audio(ss.track_ids("test")[0] if ss.track_ids("test") else "test-00", "vocals")


def test_baseline_cleaners_read_only_the_baseline_models(world, tmp_path):
    """loss and unlearning read the separator trained on the uncleaned set: models/oracle (trained on the truth),
    models/cleaned or a link named baseline that points elsewhere fail naming the params key; the score stage
    also holds selfrefine to the refine stage's folder."""
    from stemsift.stages.score import only_stage_outputs

    ss, store, _ = world
    view = StemView.of(ss, store)
    baseline_and_refined(ss, tmp_path)
    for run in ("oracle", "cleaned"):
        shutil.copytree(tmp_path / "models" / "baseline", tmp_path / "models" / run)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "baseline").symlink_to(tmp_path / "models" / "oracle")
    for name in ("loss", "unlearning"):
        for bad in ("models/oracle", "models/cleaned", "models/oracle/seed0", "elsewhere/baseline"):
            with pytest.raises(CleanerError, match=rf"^cleaners\.{name}\.model: .*not the baseline's models"):
                get_cleaner(name, {**SMALL[name](tmp_path), "model": str(tmp_path / bad)}).score(view)
    params = {"train": {"out": str(tmp_path / "models")}, "refine": {"out": str(tmp_path / "refined")},
              "cleaners": {n: SMALL[n](tmp_path) for n in ("loss", "unlearning", "selfrefine")}}
    only_stage_outputs(params, ["loss", "unlearning", "selfrefine"])  # the stage outputs themselves pass
    for name, key, value in [("loss", "model", "models/oracle"), ("selfrefine", "folder", "models/oracle")]:
        bad = {**params, "cleaners": {**params["cleaners"], name: {**params["cleaners"][name], key: str(tmp_path / value)}}}
        with pytest.raises(CleanerError, match=rf"^cleaners\.{name}\.{key}: "):
            only_stage_outputs(bad, [name])


def _scores(n: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame([(f"s{i}", lb, float(rng.random()), 0.0) for i in range(n) for lb in LABELS],
                        columns=["track_id", "label", "score", "song_score"]).assign(
        song_score=lambda d: d.groupby("track_id").score.transform("mean"))


def test_unified_and_per_target_filter_counts():
    scores = _scores(8)
    stems = scores[["track_id", "label"]].assign(split="train")
    base = given_selection(stems)
    uni = kept_songs(scores, 0.5, "unified")
    assert all(len(v) == 4 for v in uni.values()) and len({frozenset(v) for v in uni.values()}) == 1
    worst = scores.groupby("track_id").song_score.first().nsmallest(4).index
    assert not set(worst) & uni["vocals"]
    per = kept_songs(scores, 0.75, "per_target")
    assert all(len(v) == 6 for v in per.values())
    for t in LABELS:  # per target: the two lowest scores of that target's stems are dropped for that model only
        low = scores[scores.label == t].nsmallest(2, "score").track_id
        assert not set(low) & per[t]
    sel = filtered_selection(base, scores, 0.75, "per_target")
    for t in LABELS:
        tgt, itf = pools(sel, t)
        assert {s for s, _ in tgt} == per[t] and all({s for s, _ in v} == per[t] for v in itf.values())


def test_detection_metrics_perfect_and_random():
    truth = pd.DataFrame([(f"s{i}", lb, "bleeding" if i < 4 and lb == "vocals" else "clean",
                           "bleeding" if i < 4 and lb == "vocals" else "") for i in range(20) for lb in LABELS],
                         columns=["track_id", "label", "defect", "kind"])
    perfect = truth[["track_id", "label"]].assign(score=np.where(truth.defect == "clean", 1.0, 0.0))
    perfect["song_score"] = perfect.groupby("track_id").score.transform("mean")
    m = detection(perfect, truth, [0.8])
    assert m["stem_auc"]["all"] == 1.0 and m["song_auc"]["bleeding"] == 1.0 and m["stem_ap"]["all"] == 1.0
    assert m["clean_share@0.8"] == 1.0 and m["clean_kept@0.8"] == 1.0 and m["clean_share@1"] == 0.8
    big = pd.DataFrame([(f"s{i}", lb, "label_noise" if i % 2 else "clean", "swap" if i % 2 else "")
                        for i in range(4000) for lb in LABELS], columns=["track_id", "label", "defect", "kind"])
    rnd = big[["track_id", "label"]].assign(score=np.random.default_rng(0).random(len(big)))
    rnd["song_score"] = rnd.groupby("track_id").score.transform("mean")
    m = detection(rnd, big, [0.5])
    assert abs(m["stem_auc"]["all"] - 0.5) < 0.03 and abs(m["song_auc"]["label_noise"] - 0.5) < 0.03


def test_filtered_stem_set_is_hard_linked_musdb_layout(world, tmp_path):
    ss, _, _ = world
    scores = get_cleaner("random", seed=0).score(StemView.of(ss))
    sel = filtered_selection(given_selection(ss.stems, ss.track_ids("train")), scores, 0.5, "unified")
    out = write_filtered(ss, sel, tmp_path / "filtered")
    assert len(out.track_ids("train")) == 5 and out.track_ids("reference") == ss.track_ids("reference")
    assert not out.validate(deep=True)
    src = ss.root / ss.stems.path.iloc[-1]
    dst = out.root / ss.stems.path.iloc[-1]
    assert dst.is_file() and os.path.samefile(src, dst)  # hard link, not a copy
    assert (out.root / "train" / out.track_ids("train")[0] / "vocals.flac").is_file()


def test_cleaned_selection_without_a_cleaner_keeps_everything():
    base = given_selection(_scores(4)[["track_id", "label"]].assign(split="train"))
    sel, note, _ = cleaned_selection(base, None, FilterParams())
    assert sel.equals(base) and "keeps every stem" in note
    sel, note, _ = cleaned_selection(base, _scores(4), FilterParams(ratio=0.5))
    assert sel[sel.keep].track_id.nunique() == 2 and "0.5" in note


def test_robust_z_one_element_zero_mad_and_equal_groups_are_finite():
    from stemsift.clean.base import robust_z

    x = pd.Series([1.0, 2.0, 3.0, 4.0, 100.0])
    assert np.allclose(robust_z(x), (x - 3.0) / (1.4826 * 1.0))  # the MAD scale, the outlier cannot drag it
    assert robust_z(pd.Series([7.0])).tolist() == [0.0]  # one element: its own median
    most_equal = pd.Series([5.0, 5.0, 5.0, 5.0, 9.0])  # MAD 0: 1.2533 x mean absolute deviation (0.8)
    assert np.allclose(robust_z(most_equal), [0, 0, 0, 0, 4.0 / (1.2533 * 0.8)])
    assert robust_z(pd.Series([2.0] * 4)).tolist() == [0.0] * 4  # all equal: scale 1.0
    for g in (pd.Series([7.0]), most_equal, pd.Series([2.0] * 4)):
        assert np.isfinite(robust_z(g)).all()


def test_fad_scores_each_reference_stem_against_the_others_as_its_clean_null(world):
    """The null is the reference stems' leave-one-out score on the training stems' scale: one row per reference
    stem, a clean training stem sits inside it and the swapped stems far below it."""
    ss, store, truth = world
    view = StemView.of(ss, store)
    cleaner = get_cleaner("fad", seed=0)
    table = cleaner.score(view)
    null = view.nulls["fad"]
    assert null is cleaner.null and len(null) == len(view.reference)
    assert set(zip(null.track_id, null.label)) == set(zip(view.reference.track_id, view.reference.label))
    t = table.merge(truth, on=["track_id", "label"])
    clean = t[t.defect == "clean"].score
    assert null.score.min() - 1 < clean.median() < null.score.max() + 1
    assert t[(t.track_id == SWAPPED) & t.label.isin(["vocals", "bass"])].score.max() < null.score.min()

"""Self-refining labels (Koo et al. 2023): random-mix targets, the refinement loop on a tiny generated set with
swapped labels, threshold modes, the refined-label sampler rule, the selfrefine cleaner, and truth isolation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from stemsift import LABELS
from stemsift.classify.metrics import recognition, refinement_quality
from stemsift.classify.mixing import RandomMixer, union_target
from stemsift.classify.model import ClassifierConfig, InstrumentClassifier, load, save
from stemsift.classify.refine import adaptive_thresholds, check_threshold, self_refine, subset_examples, to_sets
from stemsift.classify.train import ClassifierTrainConfig, predict_signals, windows
from stemsift.clean import StemView, get_cleaner
from stemsift.clean.frames import single_thread
from stemsift.separate.data import RandomMixSampler, StemPool
from stemsift.separate.selection import SelectionError, given_selection, refined_selection
from stemsift.stemset import StemSet, StemSetWriter

from conftest import make_stems

SR = 8000
CFG = ClassifierConfig(sample_rate=SR, n_fft=256, hop=128, n_mels=32, seg_dur=1.0, depths=(1, 1, 1, 1),
                       dims=(8, 16, 32, 64))
TC = ClassifierTrainConfig(steps=150, batch_size=16, lr=3e-3, effects_prob=0.0)
SWAPPED = ("train-00", "train-01")  # vocals <-> bass exchanged in these songs


def build_set(root, n_train: int = 12, n_ref: int = 4, n_test: int = 2) -> StemSet:
    w = StemSetWriter(root, SR, 1)
    truth = []
    for split, n, base in (("reference", n_ref, 100), ("test", n_test, 200), ("train", n_train, 0)):
        for i in range(n):
            tid = f"{split}-{i:02d}" if split != "reference" else f"ref-{i:02d}"
            s = {k: v[:, :1] for k, v in make_stems(base + i, 3.0, SR, 1).items()}
            true = {lb: [lb] for lb in LABELS}
            if tid in SWAPPED:
                s["vocals"], s["bass"] = s["bass"], s["vocals"]
                true.update(vocals=["bass"], bass=["vocals"])
            w.add_track(tid, split, s, meta={"defect": "label_noise" if tid in SWAPPED else "clean"})
            if split == "train":
                truth += [(tid, lb, "label_noise" if tid in SWAPPED and lb in ("vocals", "bass") else "clean",
                           "swap" if tid in SWAPPED and lb in ("vocals", "bass") else "", true[lb]) for lb in LABELS]
    ss = w.close()
    pd.DataFrame(truth, columns=["track_id", "label", "defect", "kind", "true_instruments"]).to_parquet(
        root / "truth.parquet")
    return ss


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine") / "contaminated"
    ss = build_set(root)
    pool = StemPool(ss, ss.track_ids("train"), SR, 1)
    ref_pool = StemPool(ss, ss.track_ids("reference"), SR, 1)
    return ss, pool, ref_pool


def given_labels(ss: StemSet) -> dict:
    st = ss.stems[ss.stems.split == "train"]
    return {(t, lb): frozenset({lb}) for t, lb in zip(st.track_id, st.label)}


def test_random_mix_target_is_the_union_of_the_chosen_stems_labels(world):
    ss, pool, _ = world
    labels = given_labels(ss)
    labels[("train-03", "vocals")] = frozenset({"vocals", "drums"})  # a refined multi-label stem
    labels[("train-04", "bass")] = frozenset()                      # refined to nothing: never drawn
    mixer = RandomMixer(pool, labels, CFG.seg_len, np.random.default_rng(0), include_prob=0.5, effects_prob=0.0)
    sizes, hits = [], 0
    for _ in range(20):
        x, y = mixer.batch(8)
        assert x.shape == (8, CFG.seg_len)
        for keys, target in zip(mixer.chosen, y.numpy()):
            assert keys, "every example holds at least one stem"
            assert np.array_equal(target, union_target([labels[k] for k in keys]))
            assert ("train-04", "bass") not in keys
            hits += ("train-03", "vocals") in keys
            sizes.append(len(keys))
    assert hits > 0 and 1 <= min(sizes) and max(sizes) <= len(LABELS) and 1.5 < np.mean(sizes) < 3.0
    # the multi-label stem makes "drums" true whenever it is chosen, even if no drums stem was drawn
    assert union_target([frozenset({"vocals", "drums"})]).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_windows_cover_the_whole_signal():
    x = np.arange(25, dtype=np.float32)
    w = windows(x, 10)
    assert w.shape[1] == 10 and w[0, 0] == 0 and w[-1, -1] == 24
    assert windows(np.ones(4, np.float32), 10).shape == (1, 10)


def test_threshold_modes():
    probs = np.array([[0.95, 0.6, 0.1, 0.3], [0.7, 0.92, 0.5, 0.0]])
    assert to_sets(probs, np.full(4, 0.5)) == [frozenset({"vocals", "bass"}), frozenset({"vocals", "bass", "drums"})]
    assert to_sets(probs, np.full(4, 0.9)) == [frozenset({"vocals"}), frozenset({"bass"})]
    # adaptive: positives of class 0 score 0.3-0.4, negatives 0.1 -> a threshold between them gives F1 = 1
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (40, 4))
    t = (p > 0.6).astype(float)
    t[:, 0] = np.r_[np.ones(20), np.zeros(20)]
    p[:, 0] = np.r_[rng.uniform(0.3, 0.4, 20), np.full(20, 0.1)]
    th = adaptive_thresholds(p, t)
    assert 0.1 < th[0] <= 0.3 and np.all((p[:, 0] >= th[0]) == (t[:, 0] > 0))
    assert th[1] == pytest.approx(0.65, abs=0.051)
    assert check_threshold(0.5) == "0.5"
    with pytest.raises(ValueError, match="refine.threshold"):
        check_threshold("0.7")


def test_refinement_fixes_swapped_labels_and_breaks_few(world):
    ss, pool, ref_pool = world
    given = given_labels(ss)
    truth = pd.read_parquet(ss.root / "truth.parquet")
    true = {(t, lb): frozenset(v) for t, lb, v in zip(truth.track_id, truth.label, truth.true_instruments)}
    with single_thread():
        its = self_refine(pool, given, ref_pool, ss.track_ids("reference"), CFG, TC, iterations=1, threshold="0.5",
                          seed=0)
    assert [it.index for it in its] == [0, 1] and its[1].trained_on == its[0].refined
    for it in its:
        q = refinement_quality(given, it.refined, true)
        assert q["wrong_given"] == 4
        assert q["wrong_fixed"] >= 50, q      # random mixing learns through the noise: swaps are relabelled
        assert q["right_broken"] <= 10, q
    assert its[0].probs.shape == (len(given), 4) and np.all((its[0].probs >= 0) & (its[0].probs <= 1))


def test_adaptive_thresholds_come_from_the_reference_split(world):
    ss, pool, ref_pool = world
    with single_thread():
        its = self_refine(pool, given_labels(ss), ref_pool, ss.track_ids("reference"), CFG,
                          ClassifierTrainConfig(steps=20, batch_size=8, effects_prob=0.0), 0, "adaptive", 0)
    assert len(its) == 1 and its[0].thresholds.shape == (4,) and np.all((its[0].thresholds > 0) & (its[0].thresholds < 1))
    signals, targets, kinds = subset_examples(ref_pool, ss.track_ids("reference"))
    assert len(signals) == 15 * 4 and kinds.count("single") == 16
    probs = predict_signals(its[0].model, signals)
    assert np.allclose(adaptive_thresholds(probs, targets), its[0].thresholds)


def test_refined_rule_decides_targets_and_interferers_by_counting_draws(world):
    ss, pool, _ = world
    train = ss.track_ids("train")
    refined = {k: v for k, v in given_labels(ss).items()}
    refined[("train-02", "vocals")] = frozenset({"vocals", "drums"})  # multi-instrument: target of nothing
    refined[("train-02", "bass")] = frozenset({"drums"})              # relabelled: a drums target
    refined[("train-02", "other")] = frozenset()                      # empty: interferer everywhere, never target
    sel = refined_selection(given_selection(ss.stems, train), refined)
    counts: dict = {}
    for t in LABELS:
        sampler = RandomMixSampler(pool, sel, t, 400, np.random.default_rng(1), channel_swap=False)
        for _ in range(3000):
            sampler.example()
        counts[t] = sampler.drawn
    multi, relabelled, empty = ("train-02", "vocals"), ("train-02", "bass"), ("train-02", "other")
    for t in LABELS:
        assert counts[t].get((*multi, "target"), 0) == 0 and counts[t].get((*empty, "target"), 0) == 0
    assert counts["vocals"].get((*multi, "interferer"), 0) == 0 and counts["drums"].get((*multi, "interferer"), 0) == 0
    assert counts["bass"].get((*multi, "interferer"), 0) > 0 and counts["other"].get((*multi, "interferer"), 0) > 0
    assert counts["drums"].get((*relabelled, "target"), 0) > 0 and counts["bass"].get((*relabelled, "target"), 0) == 0
    assert counts["drums"].get((*relabelled, "interferer"), 0) == 0
    assert counts["vocals"].get((*relabelled, "interferer"), 0) > 0
    assert all(counts[t].get((*empty, "interferer"), 0) > 0 for t in ("vocals", "bass", "drums"))
    # filtering composes: a song the filter dropped stays dropped under refined labels
    base = given_selection(ss.stems, train)
    base.loc[base.track_id == "train-05", "keep"] = False
    assert not refined_selection(base, refined).query("track_id == 'train-05'").keep.any()
    # a classifier that isolates no bass stem: the bass model falls back to the given labels, with a warning
    no_bass = {k: (frozenset({"bass", "other"}) if v == frozenset({"bass"}) else v) for k, v in refined.items()}
    with pytest.warns(UserWarning, match="no stem that holds exactly 'bass'"):
        fb = refined_selection(given_selection(ss.stems, train), no_bass)
    given_bass = given_selection(ss.stems, train).query("target == 'bass'").reset_index(drop=True)
    pd.testing.assert_frame_equal(fb.query("target == 'bass'").reset_index(drop=True), given_bass)
    assert not fb.query("target == 'other' and label == 'bass' and track_id != 'train-02'").keep.any()  # rule holds for other
    with pytest.raises(SelectionError, match="no refined labels"):
        refined_selection(base, {k: v for k, v in refined.items() if k[0] != "train-07"})


def test_recognition_metrics():
    t = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], float)
    m = recognition(t * 0.9 + 0.05, t, np.full(4, 0.5))
    assert m["exact_match"] == 100 and m["f1_macro"] == 100
    m = recognition(np.full((3, 4), 0.9), t, np.full(4, 0.5))
    assert m["exact_match"] == 0 and m["recall_vocals"] == 100 and m["precision_vocals"] == pytest.approx(66.67)


def test_classifier_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = InstrumentClassifier(CFG).eval()
    save(m, tmp_path / "psi", {"iteration": 0})
    x = torch.randn(2, CFG.seg_len)
    with torch.no_grad():
        assert torch.allclose(m(x), load(tmp_path / "psi")(x))


def run_stage(root, out, metrics_cwd, monkeypatch, clean_oracle=True):
    from stemsift.stages import refine as stage

    monkeypatch.chdir(metrics_cwd)
    params = {"contaminate": {"out": str(root)},
              "refine": {"classifier": "small", "steps": 30, "batch_size": 8, "iterations": 1, "out": str(out),
                         "effects_prob": 0.0, "clean_oracle": clean_oracle, "device": "cpu"}}
    monkeypatch.setattr(stage.clsmodel, "preset", lambda name, **kw: CFG)
    with single_thread():
        return stage.run(params)


def test_refine_stage_outputs_and_truth_never_reaches_the_classifier(world, tmp_path, monkeypatch):
    ss, _, _ = world
    m = run_stage(ss.root, tmp_path / "refined", tmp_path, monkeypatch)
    table = pd.read_parquet(tmp_path / "refined" / "refined_labels.parquet")
    assert sorted(set(table.iteration)) == [0, 1] and len(table) == 2 * 12 * 4
    assert {"noisy", "iter1", "clean", "refinement"} <= set(m)
    assert json.loads((tmp_path / "metrics" / "classifier.json").read_text())["noisy"]["all"]["n"] == 2 * 15
    assert (tmp_path / "refined" / "psi1" / "classifier.pth").is_file()
    # the same run without the truth file and with the track metadata blanked gives identical labels
    blind = tmp_path / "blind"
    shutil.copytree(ss.root, blind)
    (blind / "truth.parquet").unlink()
    tracks = pd.read_parquet(blind / "tracks.parquet")
    tracks["meta"] = "{}"
    tracks.to_parquet(blind / "tracks.parquet")
    run_stage(blind, tmp_path / "refined-blind", tmp_path / "blind", monkeypatch, clean_oracle=False)
    again = pd.read_parquet(tmp_path / "refined-blind" / "refined_labels.parquet")
    pd.testing.assert_frame_equal(table, again)
    # the selfrefine cleaner reads them back through the registry: swapped stems score lowest
    view = StemView.of(ss)
    scores = get_cleaner("selfrefine", {"folder": str(tmp_path / "refined")}).score(view)
    low = set(scores.nsmallest(4, "score").apply(lambda r: (r.track_id, r.label), axis=1))
    assert len(low & {(t, lb) for t in SWAPPED for lb in ("vocals", "bass")}) >= 3

"""bench/bench_harm.py end to end at tiny settings: a harm world built by the stage functions, every
`oracle+<kind>` set trained and scored with the project's code, paired against the oracle."""
from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from stemsift import LABELS
from stemsift.data.defects import EFFECT_KINDS, LABEL_NOISE_KINDS, plan_defects

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["swap", "foreign", "merge", "bleeding", "distortion", "reverb", "lowpass"]


def bench():
    spec = importlib.util.spec_from_file_location("bench_harm", ROOT / "bench" / "bench_harm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("n", [16, 100, 103])
def test_harm_preset_gives_every_kind_an_eighth(n):
    plans = plan_defects([f"t{i}" for i in range(n)], "harm", seed=3)
    counts = Counter(p.kind for p in plans)
    assert {k: counts[k] for k in (*LABEL_NOISE_KINDS, "bleeding", *EFFECT_KINDS)} == {k: n // 8 for k in KINDS}
    assert counts[""] == n - 7 * (n // 8)
    # two label-noise kinds only: one family fewer, its songs clean
    fewer = Counter(p.kind for p in plan_defects([f"t{i}" for i in range(n)], "harm", 3, ["swap", "merge"]))
    assert fewer["foreign"] == 0 and fewer[""] == n - 6 * (n // 8)


def test_training_sets_from_truth():
    rows = [("a", lb, "clean", "") for lb in LABELS]
    rows += [("b", lb, *(("label_noise", "swap") if lb in ("bass", "drums") else ("clean", ""))) for lb in LABELS]
    rows += [("c", lb, *(("effects", "reverb") if lb == "vocals" else ("clean", ""))) for lb in LABELS]
    rows += [("d", lb, *(("effects", "reverb") if lb == "vocals" else ("bleeding", "bleeding"))) for lb in LABELS]
    truth = pd.DataFrame(rows, columns=["track_id", "label", "defect", "kind"])
    sets = bench().training_sets(truth)
    # d has two kinds: in no set; kinds without a song get no set
    assert sets == {"oracle": ["a"], "oracle+swap": ["a", "b"], "oracle+reverb": ["a", "c"]}


@pytest.mark.slow  # ~65 s on one core: 16 trainings and their museval
def test_harm_bench_end_to_end(tmp_path):
    # a bench_worlds result: blind's and degrade's stem AUC per kind; the held-out world never enters the mean
    worlds = tmp_path / "worlds.json"
    worlds.write_text(json.dumps({"held_out": "held", "rows": [
        {"variant": "blind", "world": "w1", "draw": 0, "stem_auc_reverb": 0.6, "stem_auc_swap": 0.9},
        {"variant": "blind", "world": "w1", "draw": 1, "stem_auc_reverb": 0.8, "stem_auc_swap": None},
        {"variant": "blind", "world": "held", "draw": 0, "stem_auc_reverb": 0.0},
        {"variant": "degrade", "world": "w1", "draw": 0, "stem_auc_reverb": 0.95},
        {"variant": "fad", "world": "w1", "draw": 0, "stem_auc_lowpass": 0.5}]}))
    out = tmp_path / "metrics" / "harm.json"
    summary = bench().main(["--train-songs", "16", "--reference-songs", "1", "--test-songs", "2", "--duration", "4",
                            "--steps", "2", "--steps-per-epoch", "2", "--seeds", "0", "1", "--workers", "1",
                            "-S", "train.seq_dur=1.0", "-S", "train.batch_size=2", "-S", "evaluate.workers=1",
                            "-S", "data.workers=1", "--cache", str(tmp_path / "harm"), "--json", str(out),
                            "--worlds-json", str(worlds)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    rows = summary["families"]
    assert [r["kind"] for r in rows] == KINDS
    for r in rows:
        lo, hi = r["ci95"]
        assert all(math.isfinite(x) for x in (r["delta_db"], lo, hi)) and lo <= r["delta_db"] <= hi, r
        assert r["pairs"] == 2 * 2 and r["seeds"] == 2 and r["unpaired"] == 0
        assert r["verdict"] == ("harm" if hi < 0 else "helps" if lo > 0 else "noise")
    md = out.with_suffix(".md").read_text()
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + 7
    det = summary["detection"]
    assert det["reverb"]["blind"] == {"stem_auc": 0.7, "draws": 2} and det["swap"]["blind"]["draws"] == 1
    assert det["reverb"]["degrade"]["stem_auc"] == 0.95 and "lowpass" not in det
    assert "| reverb | " in md and "0.700 (2)" in md

    # each set trained on the oracle's songs plus exactly its kind's songs, every stem of them kept
    world = next((tmp_path / "harm").glob("world-*"))
    truth = pd.read_parquet(world / "data" / "contaminated" / "truth.parquet")
    bad = truth[truth.defect != "clean"]
    clean = set(truth.track_id) - set(bad.track_id)
    tracks = pd.read_parquet(world / "data" / "contaminated" / "tracks.parquet") if (
        world / "data" / "contaminated" / "tracks.parquet").is_file() else None
    assert clean and sorted(summary["sets"]["oracle"]) == sorted(clean)
    for r in rows:
        songs = {t for t, g in bad.groupby("track_id") if set(g.kind) == {r["kind"]}}
        assert songs and r["songs_added"] == len(songs)
        sel = pd.read_parquet(world / "selections" / f"oracle+{r['kind']}.parquet")
        assert set(sel.track_id) == clean | songs and sel.keep.all()
        assert len(sel) == len(clean | songs) * len(LABELS) * len(LABELS)  # every stem, every target model
        if tracks is not None and "defect_kind" in tracks:
            assert set(tracks.set_index("track_id").defect_kind.reindex(sorted(songs))) == {r["kind"]}
    oracle = pd.read_parquet(world / "selections" / "oracle.parquet")
    assert set(oracle.track_id) == clean

    # a new make worlds: --rejoin swaps the detection columns in, trains nothing and keeps every Δ SDR
    worlds.write_text(json.dumps({"held_out": "held", "rows": [
        {"variant": "blind", "world": "w1", "draw": 0, "stem_auc_reverb": 0.9}]}))
    again = bench().main(["--rejoin", "--json", str(out), "--worlds-json", str(worlds),
                          "--cache", str(tmp_path / "no-training-here")])
    assert again["detection"] == {"reverb": {"blind": {"stem_auc": 0.9, "draws": 1}}}
    assert again["families"] == summary["families"] and json.loads(out.read_text()) == again
    assert "0.900 (1)" in out.with_suffix(".md").read_text() and not (tmp_path / "no-training-here").exists()

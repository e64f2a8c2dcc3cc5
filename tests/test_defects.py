"""Tests for stemsift.data.defects on small synthetic stems (band-limited noise, sines, clicks)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from stemsift import LABELS
from stemsift.audio import active_rms
from stemsift.data.defects import (DEFAULT_CONFIG, DEFECTS, LABEL_NOISE_KINDS, PRESETS, SongPlan, contaminate_song,
                                   level_song, plan_defects, resolve_config)

SR = 16000
SECONDS = 2.0
FRAMES = int(SR * SECONDS)
# a distinct spectral band per label, so that contents can be told apart
BANDS = {"vocals": (300.0, 1500.0), "bass": (40.0, 250.0), "drums": (2000.0, 7000.0), "other": (1500.0, 4000.0)}


def band_noise(rng: np.random.Generator, lo: float, hi: float, frames: int = FRAMES, channels: int = 2,
               rms: float = 0.1) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal((frames, channels)), axis=0)
    f = np.fft.rfftfreq(frames, 1 / SR)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n=frames, axis=0)
    return (x * rms / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def make_song(seed: int = 0, silent: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    song = {label: band_noise(rng, *BANDS[label]) for label in LABELS}
    for label in silent:
        song[label] = np.zeros_like(song[label])
    return song


def energy(x: np.ndarray) -> float:
    return float(np.sum(np.square(x, dtype=np.float64)))


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64), axis=0)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def run(song, defect, kind, seed=0, config=None, donor=None):
    if kind == "foreign" and donor is None:
        donor = make_song(1000 + seed)
    return contaminate_song(song, SongPlan("t", defect, kind), SR, np.random.default_rng([seed, 0]), config,
                            donor=donor, donor_id="d" if donor is not None else "")


def unmatched(out, rows):
    """The stems as the defect left them, before the A/B level match (its recorded gain undone)."""
    gains = {r["label"]: r["params"].get("level_match_db", 0.0) for r in rows}
    return {label: out[label].astype(np.float64) / 10 ** (gains[label] / 20) for label in LABELS}


def level_db(x):
    return 20 * np.log10(active_rms(x, SR))


def rows_by_label(rows):
    assert [r["label"] for r in rows] == list(LABELS)
    return {r["label"]: r for r in rows}


# ------------------------------------------------------------------------------------------------ plan

@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 13, 26, 101])
def test_plan_counts_mixed(n):
    ids = [f"track{i:03d}" for i in range(n)]
    plans = plan_defects(ids, "mixed", seed=3)
    assert [p.track_id for p in plans] == ids
    c = Counter(p.defect for p in plans)
    assert c["label_noise"] == n // 4 and c["bleeding"] == n // 4
    assert c["clean"] == n - 2 * (n // 4)
    assert c["effects"] == 0
    kinds = Counter(p.kind for p in plans if p.defect == "label_noise")
    assert set(kinds) <= {"swap", "merge", "foreign"}
    counts = [kinds[k] for k in ("swap", "merge", "foreign")]
    assert max(counts) - min(counts) <= 1
    assert all(p.kind == "bleeding" for p in plans if p.defect == "bleeding")
    assert all(p.kind == "" for p in plans if p.defect == "clean")


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 6, 7, 12, 25, 100])
def test_plan_counts_effects(n):
    ids = [f"s{i}" for i in range(n)]
    plans = plan_defects(ids, "effects", seed=11)
    c = Counter(p.defect for p in plans)
    assert c["effects"] == n // 2 and c["clean"] == n - n // 2
    assert c["label_noise"] == c["bleeding"] == 0
    kinds = Counter(p.kind for p in plans if p.defect == "effects")
    assert set(kinds) <= {"distortion", "reverb", "lowpass"}
    counts = [kinds[k] for k in ("distortion", "reverb", "lowpass")]
    assert sum(counts) == n // 2 and max(counts) - min(counts) <= 1


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 12, 13, 18, 60, 101])
def test_plan_counts_blend(n):
    plans = plan_defects([f"b{i}" for i in range(n)], "blend", seed=5)
    c = Counter(p.defect for p in plans)
    s = n // 6
    assert c["label_noise"] == c["bleeding"] == c["effects"] == s and c["clean"] == n - 3 * s
    for defect, kinds in (("label_noise", LABEL_NOISE_KINDS), ("effects", ("distortion", "reverb", "lowpass"))):
        got = Counter(p.kind for p in plans if p.defect == defect)
        assert set(got) <= set(kinds)
        assert sum(got.values()) == s and max(got[k] for k in kinds) - min(got[k] for k in kinds) <= 1


def test_plan_label_noise_kinds_from_config():
    ids = [f"t{i}" for i in range(24)]
    for preset in ("mixed", "mixed25", "labels", "blend"):
        kinds = {p.kind for p in plan_defects(ids, preset, 0, ["foreign"]) if p.defect == "label_noise"}
        assert kinds == {"foreign"}
    labels = Counter((p.defect, p.kind) for p in plan_defects(ids, "labels", 0))  # label noise alone, kinds even
    assert labels == {("clean", ""): 12, ("label_noise", "swap"): 4, ("label_noise", "merge"): 4, ("label_noise", "foreign"): 4}
    two = Counter(p.kind for p in plan_defects(ids, "mixed", 0, ["swap", "merge"]) if p.defect == "label_noise")
    assert two == {"swap": 3, "merge": 3}
    for bad in ([], ["swap", "swap"], ["rename"], "swap"):
        with pytest.raises(ValueError, match="label_noise.kinds"):
            plan_defects(ids, "mixed", 0, bad)


@pytest.mark.parametrize("n", [0, 3, 10])
def test_plan_none_all_clean(n):
    plans = plan_defects([str(i) for i in range(n)], "none", seed=0)
    assert len(plans) == n and all(p.defect == "clean" and p.kind == "" for p in plans)


def test_plan_deterministic_and_shuffled_by_seed():
    ids = [f"t{i}" for i in range(40)]
    a, b = plan_defects(ids, "mixed", 7), plan_defects(ids, "mixed", 7)
    assert a == b
    others = [plan_defects(ids, "mixed", s) for s in range(8, 13)]
    assert any(o != a for o in others)
    # shuffled: the defective songs are not simply the last ones in track order
    defective = [i for i, p in enumerate(a) if p.defect != "clean"]
    assert defective != list(range(20, 40))
    # the remainder of an uneven split is not always given to the same kind
    extra = {Counter(p.kind for p in plan_defects(ids[:4], "effects", s) if p.defect == "effects").most_common(1)[0][0]
             for s in range(30)}
    assert len(extra) > 1


def test_plan_unknown_preset_and_duplicates():
    with pytest.raises(ValueError) as e:
        plan_defects(["a", "b"], "bogus", 0)
    for name in PRESETS:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="duplicate"):
        plan_defects(["a", "b", "a"], "mixed", 0)


def test_songplan_validates():
    with pytest.raises(ValueError):
        SongPlan("t", "noise", "")
    with pytest.raises(ValueError):
        SongPlan("t", "label_noise", "reverb")
    assert set(DEFECTS) == {"clean", "label_noise", "bleeding", "effects"}


# ---------------------------------------------------------------------------------------------- config

def test_config_merge_and_validation():
    cfg = resolve_config({"bleeding": {"level_db": [-30, -25]}})
    assert cfg["bleeding"]["level_db"] == [-30.0, -25.0]
    assert cfg["bleeding"]["victims"] == DEFAULT_CONFIG["bleeding"]["victims"]
    assert cfg["effects"] == resolve_config()["effects"]
    assert DEFAULT_CONFIG["bleeding"]["level_db"] == [-20.0, -10.0]  # not mutated by the merge
    bad = [
        {"bleeding": {"level_db": [-10, -20]}},
        {"bleeding": {"level_db": [-10]}},
        {"bleeding": {"level_db": "loud"}},
        {"bleeding": {"filter_prob": 1.5}},
        {"bleeding": {"victims": [0, 2]}},
        {"bleeding": {"victims": [1, 5]}},
        {"bleeding": {"delay_ms": [-5, 10]}},
        {"bleeding": {"cutoff_hz": [0, 100]}},
        {"bleeding": {"levels": [-20, -10]}},
        {"effects": {"reverb": {"room_size": 2.0}}},
        {"effects": {"distortion": {"drive_db": float("nan")}}},
        {"effects": {"distortion": {"gain": 3}}},
        {"label_noise": {"merge_gain_db": [3, -3]}},
        {"label_noise": 5},
        {"label_noise": {"kinds": ["swap", "relabel"]}},
        {"label_noise": {"kinds": []}},
        {"loudness": {"song_db": [3, -3]}},
        {"loudness": {"peak": 1.5}},
        {"loudness": {"peak": 0}},
        {"loudness": {"target_db": -20}},
    ]
    for c in bad:
        with pytest.raises(ValueError, match="defect config"):
            resolve_config(c)


def test_bad_stems_rejected():
    song = make_song()
    with pytest.raises(ValueError):
        run({k: v for k, v in song.items() if k != "bass"}, "clean", "")
    short = dict(song, bass=song["bass"][:-10])
    with pytest.raises(ValueError):
        run(short, "clean", "")


# ------------------------------------------------------------------------------------------ contaminate

ALL_PLANS = [("clean", ""), ("label_noise", "swap"), ("label_noise", "merge"), ("label_noise", "foreign"),
             ("bleeding", "bleeding"), ("effects", "distortion"), ("effects", "reverb"), ("effects", "lowpass")]


@pytest.mark.parametrize("defect,kind", ALL_PLANS)
def test_input_not_mutated_deterministic_and_serialisable(defect, kind):
    song = make_song(1)
    before = {k: v.copy() for k, v in song.items()}
    out1, rows1 = run(song, defect, kind, seed=5)
    out2, rows2 = run(song, defect, kind, seed=5)
    for label in LABELS:
        np.testing.assert_array_equal(song[label], before[label])
        assert out1[label] is not song[label]
        assert out1[label].dtype == np.float32 and out1[label].shape == song[label].shape
        np.testing.assert_array_equal(out1[label], out2[label])
    assert rows1 == rows2
    json.dumps(rows1)
    rows = rows_by_label(rows1)
    for label, r in rows.items():
        assert set(r) == {"label", "defect", "kind", "params", "true_instruments"}
        assert r["true_instruments"] == sorted(r["true_instruments"])
        changed = not np.array_equal(out1[label], song[label])
        # a row is marked exactly when its stem changed
        assert changed == (r["defect"] != "clean"), (label, r)
        if r["defect"] == "clean":
            assert r["kind"] == "" and r["params"] == {} and r["true_instruments"] == [label]
        else:
            assert r["defect"] == defect and r["kind"] == kind
    if defect != "clean":
        assert any(r["defect"] != "clean" for r in rows.values())


@pytest.mark.parametrize("defect,kind", ALL_PLANS[1:])
@pytest.mark.parametrize("seed", range(3))
def test_processed_stems_keep_their_clean_level(defect, kind, seed):
    """The A/B level match: a defect changes what a stem holds, never how loud it plays."""
    rng = np.random.default_rng(60 + seed)
    song = {label: band_noise(rng, *BANDS[label], rms=float(rng.uniform(0.02, 0.2))) for label in LABELS}
    out, rows = run(song, defect, kind, seed=seed)
    for r in rows:
        if r["defect"] != "clean":
            assert abs(level_db(out[r["label"]]) - level_db(song[r["label"]])) < 0.1, r
            assert np.isfinite(r["params"]["level_match_db"])


def test_different_rngs_differ():
    song = make_song(2)
    outs = [run(song, "bleeding", "bleeding", seed=s)[1] for s in range(6)]
    assert len({json.dumps(r) for r in outs}) > 1


def test_clean_plan_identity():
    song = make_song(3)
    out, rows = run(song, "clean", "")
    for label in LABELS:
        np.testing.assert_array_equal(out[label], song[label])
    assert all(r["defect"] == "clean" for r in rows)


# ---- bleeding

def _leak_level(out, song, label):
    return 10 * np.log10(energy(out[label].astype(np.float64) - song[label]) / energy(song[label]))


@pytest.mark.parametrize("seed", range(4))
def test_bleeding_level_exact_without_filter_or_delay(seed):
    song = make_song(10 + seed)
    cfg = {"bleeding": {"filter_prob": 0.0, "delay_prob": 0.0, "victims": [4, 4]}}
    out, rows = run(song, "bleeding", "bleeding", seed=seed, config=cfg)
    raw = unmatched(out, rows)
    rows = rows_by_label(rows)
    for v in LABELS:
        r = rows[v]
        assert r["defect"] == "bleeding"
        p = r["params"]
        assert -20.0 <= p["level_db"] <= -10.0
        assert abs(_leak_level(raw, song, v) - p["level_db"]) < 0.5
        assert p["cutoff_hz"] is None and p["delay_samples"] == 0
        srcs = [s for s in LABELS if s != v]
        assert sorted(p["sources"]) == sorted(srcs)
        assert r["true_instruments"] == sorted(LABELS)
        # the leak is exactly a scaled copy of the other stems
        leak = raw[v] - song[v]
        ref = sum(song[s].astype(np.float64) for s in srcs) * 10 ** (p["gain_db"] / 20)
        np.testing.assert_allclose(leak, ref, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_bleeding_level_exact_with_filter_and_delay(seed):
    rng = np.random.default_rng(seed)
    song = {label: band_noise(rng, 20.0, 7900.0) for label in LABELS}  # broadband: the filter matters
    cfg = {"bleeding": {"filter_prob": 1.0, "delay_prob": 1.0, "delay_ms": [5.0, 20.0],
                        "cutoff_hz": [1000.0, 1500.0], "level_db": [-25.0, -5.0], "victims": [1, 4]}}
    out, rows = run(song, "bleeding", "bleeding", seed=seed, config=cfg)
    raw = unmatched(out, rows)
    victims = [r for r in rows if r["defect"] == "bleeding"]
    assert 1 <= len(victims) <= 4
    for r in victims:
        v, p = r["label"], r["params"]
        assert abs(_leak_level(raw, song, v) - p["level_db"]) < 0.5
        assert 1000.0 <= p["cutoff_hz"] <= 1500.0 and p["filtered"]
        assert 5.0 <= p["delay_ms"] <= 20.0 + 1000.0 / SR
        leak = raw[v] - song[v]
        n = p["delay_samples"]
        assert n > 0 and np.abs(leak[:n]).max() < 1e-7  # nothing leaks before the delay (float32 rounding aside)
        # the leak is low-passed: relatively far less energy above 4 kHz than in the victim
        src = sum(song[s].astype(np.float64) for s in p["sources"])
        hi_leak = band_energy(leak, 4000, 8000) / band_energy(leak, 0, 1000)
        hi_src = band_energy(src, 4000, 8000) / band_energy(src, 0, 1000)
        assert 10 * np.log10(hi_leak / hi_src) < -30
    for r in rows:
        if r["defect"] == "clean":
            np.testing.assert_array_equal(out[r["label"]], song[r["label"]])


def test_bleeding_victim_count_varies_and_respects_range():
    song = make_song(4)
    counts = {sum(r["defect"] == "bleeding" for r in run(song, "bleeding", "bleeding", seed=s)[1])
              for s in range(30)}
    assert counts <= {1, 2, 3, 4} and len(counts) >= 3
    counts = {sum(r["defect"] == "bleeding" for r in
                  run(song, "bleeding", "bleeding", seed=s, config={"bleeding": {"victims": [2, 2]}})[1])
              for s in range(10)}
    assert counts == {2}


def test_bleeding_skips_silent_stems():
    song = make_song(5, silent=("vocals", "other"))
    for s in range(8):
        out, rows = run(song, "bleeding", "bleeding", seed=s, config={"bleeding": {"victims": [4, 4]}})
        rows = rows_by_label(rows)
        for label in ("vocals", "other"):
            assert rows[label]["defect"] == "clean" and rows[label]["true_instruments"] == []
            assert not np.any(out[label])
        for label in ("bass", "drums"):
            other = "drums" if label == "bass" else "bass"
            assert rows[label]["params"]["sources"] == [other]
            assert rows[label]["true_instruments"] == sorted([label, other])
    # with a single audible stem nothing can bleed
    out, rows = run(make_song(5, silent=("vocals", "other", "drums")), "bleeding", "bleeding")
    assert all(r["defect"] == "clean" for r in rows)


# ---- label noise

@pytest.mark.parametrize("seed", range(5))
def test_swap(seed):
    song = make_song(20 + seed)
    out, rows = run(song, "label_noise", "swap", seed=seed)
    rows = rows_by_label(rows)
    swapped = [label for label in LABELS if rows[label]["defect"] == "label_noise"]
    assert len(swapped) == 2
    a, b = swapped
    raw = unmatched(out, list(rows.values()))
    np.testing.assert_allclose(raw[a], song[b], atol=1e-6)  # b's content in a's slot, at a's level
    np.testing.assert_allclose(raw[b], song[a], atol=1e-6)
    assert abs(level_db(out[a]) - level_db(song[a])) < 0.1 and abs(level_db(out[b]) - level_db(song[b])) < 0.1
    assert rows[a]["true_instruments"] == [b] and rows[b]["true_instruments"] == [a]
    assert rows[a]["params"]["swapped_with"] == b and rows[b]["params"]["swapped_with"] == a
    for label in LABELS:
        if label not in swapped:
            np.testing.assert_array_equal(out[label], song[label])


def test_swap_pairs_vary():
    song = make_song(6)
    pairs = {tuple(r["label"] for r in run(song, "label_noise", "swap", seed=s)[1] if r["defect"] != "clean")
             for s in range(30)}
    assert len(pairs) >= 4


@pytest.mark.parametrize("seed", range(5))
def test_merge(seed):
    song = make_song(30 + seed)
    out, rows = run(song, "label_noise", "merge", seed=seed)
    rows = rows_by_label(rows)
    merged = [label for label in LABELS if rows[label]["defect"] == "label_noise"]
    assert len(merged) == 1
    a = merged[0]
    p = rows[a]["params"]
    b = p["source"]
    assert b != a and b in LABELS
    assert rows[a]["true_instruments"] == sorted([a, b])
    assert -6.0 <= p["gain_db"] <= 0.0
    # the stem now correlates with the merged source, and it did not before
    assert corr(out[a], song[b]) > 0.3 > abs(corr(song[a], song[b])) + 0.2
    added = unmatched(out, list(rows.values()))[a] - song[a]
    assert corr(added, song[b]) > 0.999
    assert abs(10 * np.log10(energy(added) / energy(song[b])) - p["gain_db"]) < 0.05
    # B's own stem (and the others) are kept
    for label in LABELS:
        if label != a:
            np.testing.assert_array_equal(out[label], song[label])
            assert rows[label]["defect"] == "clean"


def test_merge_gain_range_from_config():
    song = make_song(7)
    for s in range(5):
        _, rows = run(song, "label_noise", "merge", seed=s, config={"label_noise": {"merge_gain_db": [-20, -18]}})
        p = next(r["params"] for r in rows if r["defect"] != "clean")
        assert -20.0 <= p["gain_db"] <= -18.0


# ---- effects

ALL_STEMS = {"effects": {"stem_prob": 1.0}}


def test_lowpass_removes_high_band():
    rng = np.random.default_rng(40)
    song = {label: band_noise(rng, 20.0, 7990.0) for label in LABELS}
    out, rows = run(song, "effects", "lowpass", config=ALL_STEMS)
    out = unmatched(out, rows)  # the filter's own response (the level match then lifts the whole stem)
    for r in rows:
        label = r["label"]
        assert r["defect"] == "effects" and r["kind"] == "lowpass"
        assert r["params"]["cutoff_frequency_hz"] == 3000.0
        assert r["true_instruments"] == [label]
        drop = lambda lo, hi: 10 * np.log10(band_energy(out[label], lo, hi) / band_energy(song[label], lo, hi))
        # pedalboard's LowpassFilter is first order (6 dB/octave): modest above 4 kHz, deep near Nyquist
        assert drop(4000, 8000) < -8
        assert drop(7000, 8000) < -20
        assert abs(drop(20, 1000)) < 1.0


def test_distortion_adds_harmonics_and_flattens_peaks():
    t = np.arange(FRAMES) / SR
    sine = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    song = {label: np.stack([sine, sine], axis=1) for label in LABELS}
    out, rows = run(song, "effects", "distortion", config=ALL_STEMS)
    for label in LABELS:
        x, y = song[label], out[label]
        h_before = band_energy(x, 1300, 1340) / band_energy(x, 420, 460)
        h_after = band_energy(y, 1300, 1340) / band_energy(y, 420, 460)
        assert 10 * np.log10(h_after / h_before) > 30  # third harmonic appears
        crest = lambda z: np.max(np.abs(z)) / np.sqrt(np.mean(z.astype(np.float64) ** 2))
        assert crest(y) < 0.9 * crest(x)
    assert all(r["params"]["drive_db"] == 25.0 for r in rows)


def test_reverb_lengthens_decay():
    x = np.zeros((FRAMES, 2), dtype=np.float32)
    x[SR // 4: SR // 4 + 16] = 0.5  # a click
    song = {label: x.copy() for label in LABELS}
    out, rows = run(song, "effects", "reverb", config=ALL_STEMS)
    after = slice(SR // 4 + SR // 10, SR // 4 + SR // 2)  # 100..500 ms after the click
    for label in LABELS:
        assert energy(song[label][after]) == 0
        assert 10 * np.log10(energy(out[label][after]) / energy(out[label])) > -30
    p = rows[0]["params"]
    assert p["room_size"] == 0.8 and p["wet_level"] == 0.5 and p["dry_level"] == 0.4 and p["damping"] == 0.8


def test_effect_settings_from_config():
    rng = np.random.default_rng(41)
    song = {label: band_noise(rng, 20.0, 7990.0) for label in LABELS}
    weak = unmatched(*run(song, "effects", "lowpass", config=ALL_STEMS))
    strong, rows = run(song, "effects", "lowpass",
                       config={"effects": {"stem_prob": 1.0, "lowpass": {"cutoff_frequency_hz": 300.0}}})
    strong = unmatched(strong, rows)
    assert rows[0]["params"]["cutoff_frequency_hz"] == 300.0
    assert band_energy(strong["vocals"], 1000, 3000) < 0.2 * band_energy(weak["vocals"], 1000, 3000)


@pytest.mark.parametrize("kind", ["distortion", "reverb", "lowpass"])
def test_effects_subset_only_affected_change(kind):
    song = make_song(50)
    sizes = Counter()
    for s in range(16):
        out, rows = run(song, "effects", kind, seed=s)
        affected = [r["label"] for r in rows if r["defect"] == "effects"]
        assert len(affected) >= 1
        sizes[len(affected)] += 1
        for r in rows:
            label = r["label"]
            if r["defect"] == "effects":
                assert r["kind"] == kind and r["params"]["effect"] == kind
                assert r["true_instruments"] == [label]
                assert not np.allclose(out[label], song[label], atol=1e-4)
            else:
                np.testing.assert_array_equal(out[label], song[label])
    assert len(sizes) >= 2 and sizes[4] < 16  # a random subset, not always all stems


def test_effects_skip_silent_stems():
    song = make_song(51, silent=("bass",))
    for s in range(10):
        _, rows = run(song, "effects", "distortion", seed=s, config=ALL_STEMS)
        rows = rows_by_label(rows)
        assert rows["bass"]["defect"] == "clean" and rows["bass"]["true_instruments"] == []
        assert all(rows[label]["defect"] == "effects" for label in LABELS if label != "bass")


# ---- foreign instrument

@pytest.mark.parametrize("seed", range(5))
def test_foreign_takes_a_donor_stem_of_another_label(seed):
    song, donor = make_song(70 + seed), make_song(170 + seed)
    out, rows = run(song, "label_noise", "foreign", seed=seed, donor=donor)
    raw = unmatched(out, rows)
    rows = rows_by_label(rows)
    hit = [label for label in LABELS if rows[label]["defect"] != "clean"]
    assert len(hit) == 1
    a = hit[0]
    r = rows[a]
    b = r["params"]["donor_label"]
    assert b != a and r["kind"] == "foreign" and r["params"]["donor"] == "d" and r["true_instruments"] == [b]
    np.testing.assert_allclose(raw[a], donor[b], atol=1e-6)  # the donor's stem, level-matched to a's
    assert abs(level_db(out[a]) - level_db(song[a])) < 0.1
    assert max(abs(corr(out[a], song[label])) for label in LABELS) < 0.05  # no part of this song's own
    for label in LABELS:
        if label != a:
            np.testing.assert_array_equal(out[label], song[label])


def test_foreign_slots_and_donor_labels_vary_never_equal():
    song, donor = make_song(80), make_song(180)
    pairs = set()
    for s in range(30):
        r = next(r for r in run(song, "label_noise", "foreign", seed=s, donor=donor)[1] if r["defect"] != "clean")
        pairs.add((r["label"], r["params"]["donor_label"]))
    assert all(a != b for a, b in pairs) and len(pairs) >= 6


def test_foreign_donor_length_channels_and_silence():
    song = make_song(81)
    short = {label: x[: FRAMES // 3] for label, x in make_song(181).items()}
    out, rows = run(song, "label_noise", "foreign", seed=1, donor=short)
    r = next(r for r in rows if r["defect"] != "clean")
    raw = unmatched(out, rows)[r["label"]]
    assert raw.shape == song[r["label"]].shape  # a shorter donor stem is looped to the song's length
    np.testing.assert_allclose(raw[FRAMES // 3: 2 * (FRAMES // 3)], short[r["params"]["donor_label"]], atol=1e-6)
    with pytest.raises(ValueError, match="donor"):
        contaminate_song(song, SongPlan("t", "label_noise", "foreign"), SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="donor"):
        run(song, "label_noise", "foreign", donor={label: x[:, :1] for label, x in make_song(182).items()})
    # the donor has nothing audible but the song's own only label: nothing foreign to give
    lone = make_song(83, silent=("bass", "drums", "other"))
    out, rows = run(lone, "label_noise", "foreign", donor=make_song(183, silent=("bass", "drums", "other")))
    assert all(r["defect"] == "clean" for r in rows)


# ---- level treatment of a whole song

def test_level_song_gain_then_one_headroom_rule():
    quiet = {label: x * np.float32(0.1) for label, x in make_song(90).items()}
    out, g = level_song(quiet, np.random.default_rng(0), {"loudness": {"song_db": [2.0, 2.0]}})
    assert g == {"song_db": 2.0, "headroom_db": 0.0}
    for label in LABELS:
        np.testing.assert_allclose(out[label], quiet[label] * 10 ** (2 / 20), rtol=1e-5, atol=1e-7)
    loud = {label: x * np.float32(2.0) for label, x in make_song(91).items()}
    out, g = level_song(loud, np.random.default_rng(0), {"loudness": {"song_db": [0.0, 3.0], "peak": 0.9}})
    assert 0.0 <= g["song_db"] <= 3.0 and g["headroom_db"] < 0
    peak = max([np.abs(sum(out.values())).max()] + [np.abs(x).max() for x in out.values()])
    assert abs(peak - 0.9) < 1e-5
    ratio = {label: level_db(out[label]) - level_db(loud[label]) for label in LABELS}  # one gain for every stem
    assert max(ratio.values()) - min(ratio.values()) < 1e-3
    draws = {level_song(quiet, np.random.default_rng(s))[1]["song_db"] for s in range(20)}
    assert min(draws) >= -4.0 and max(draws) <= 4.0 and len(draws) == 20


# ---- the stage: every training song re-written alike

@pytest.fixture(scope="module")
def contaminated(tmp_path_factory):
    from conftest import make_stems
    from stemsift.params import ContaminateParams
    from stemsift.stages.contaminate import contaminate_stemset
    from stemsift.stemset import StemSet, StemSetWriter

    tmp = tmp_path_factory.mktemp("contaminate")
    w = StemSetWriter(tmp / "raw", 8000, 1, source="synthetic")
    rng = np.random.default_rng(0)
    for i in range(20):
        split = "train" if i < 18 else ("reference" if i == 18 else "test")
        g = np.float32(10 ** (rng.uniform(-9.0, 0.0) / 20))  # songs come at different levels
        w.add_track(f"{split}-{i:02d}", split, {k: v * g for k, v in make_stems(i, 1.0, 8000, 1).items()})
    raw = w.close()
    truth = contaminate_stemset(raw, tmp / "contaminated", ContaminateParams(preset="blend", seed=2))
    return raw, StemSet(tmp / "contaminated"), truth


def test_contaminated_songs_are_rewritten_and_defects_keep_the_clean_level(contaminated):
    raw, ss, truth = contaminated
    assert not [f for f in ss.validate() if f.fatal]
    sha = lambda s: s.stems.set_index(["track_id", "label"]).sha1
    same = sha(ss) == sha(raw).reindex(sha(ss).index)
    train = ss.stems.split == "train"
    assert not same[train.to_numpy()].any()  # no training stem, clean or not, is a byte copy of data/raw's
    ref = (ss.stems.split == "reference").to_numpy()
    assert not same[ref].any()  # the reference songs get the same level treatment: one population with train
    assert same[(ss.stems.split == "test").to_numpy()].all()   # test songs are copied as they are
    gains = [json.loads(m) for m in ss.tracks[ss.tracks.split == "reference"].meta]
    assert all(-4.0 <= g["song_db"] <= 4.0 and g["headroom_db"] <= 0.0 for g in gains)
    mix = lambda s: s.tracks.set_index("track_id").sha1
    assert (mix(ss)[ss.track_ids("train")] != mix(raw)[ss.track_ids("train")]).all()
    clean_songs = set(truth.track_id) - set(truth[truth.defect != "clean"].track_id)
    assert len(clean_songs) == 9
    for r in truth.itertuples():
        p = json.loads(r.params)
        assert -4.0 <= p["song_db"] <= 4.0 and p["headroom_db"] <= 0.0
        song_gain = p["song_db"] + p["headroom_db"]
        sr = ss.sample_rate
        # every stem plays at its clean stem's level times the song's gain: the defect leaves loudness alone
        got = 20 * np.log10(active_rms(ss.load(r.track_id, r.label), sr) / active_rms(raw.load(r.track_id, r.label), sr))
        assert abs(got - song_gain) < 0.1, (r.track_id, r.label, r.defect, r.kind, got, song_gain)
        if r.defect != "clean":
            assert "level_match_db" in p
        meta = ss.meta(r.track_id)
        assert meta["song_db"] == p["song_db"] and meta["defect"] in DEFECTS


def test_contaminated_foreign_stem_comes_from_another_training_song(contaminated):
    raw, ss, truth = contaminated
    rows = truth[truth.kind == "foreign"]
    assert len(rows) == 1
    r = rows.iloc[0]
    p = json.loads(r.params)
    assert p["donor"] in raw.track_ids("train") and p["donor"] != r.track_id
    assert p["donor_label"] != r.label and list(r.true_instruments) == [p["donor_label"]]
    assert corr(ss.load(r.track_id, r.label), raw.load(p["donor"], p["donor_label"])) > 0.999


def test_contaminated_blend_counts(contaminated):
    from stemsift.stages.contaminate import summarize

    _, _, truth = contaminated
    counts = summarize(truth)
    assert counts["songs"] == 18 and counts["songs_clean"] == 9
    assert counts["songs_label_noise"] == counts["songs_bleeding"] == counts["songs_effects"] == 3
    assert all(counts[f"songs_{k}"] == 1 for k in ("swap", "merge", "foreign", "distortion", "reverb", "lowpass"))

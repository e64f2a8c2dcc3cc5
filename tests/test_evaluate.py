"""Separation scoring: museval BSSEval v4 (SiSEC frame medians) and MDX utterance SDR on generated stems.

BSSEval's cost is set by its 512-tap distortion filters: every track solves a (4 * channels * 512)^2 system four
times, whatever its length, so a stereo call costs about 8x a mono one (~10-17 s vs ~2-4 s on 2 busy cores).
The museval-backed tests therefore use mono 4 s tracks scored once in a module fixture; the metric code is
channel-agnostic and stereo is covered by the (cheap) utterance-SDR, silence and length tests.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import make_stems
from stemsift import LABELS
from stemsift.separate.evaluate import (COLUMNS, bsseval_track, score_track, museval_pool, score_tracks, summarize,
                                        utterance_sdr)

SR = 8000
SECONDS = 4.0


def with_noise(stems: dict, snr_db: float, seed: int) -> dict:
    """Each stem plus white noise at exactly ``snr_db`` (energy ratio over the whole stem, all channels)."""
    rng = np.random.default_rng(seed)
    out = {}
    for lb, s in stems.items():
        s = s.astype(np.float64)
        n = rng.standard_normal(s.shape)
        n *= math.sqrt(np.sum(s ** 2) / np.sum(n ** 2) / 10 ** (snr_db / 10))
        out[lb] = s + n
    return out


@pytest.fixture(scope="module")
def tracks() -> list[tuple[str, dict, dict]]:
    """Mono tracks: oracle, 10 dB noise, the same with bass/drums estimates swapped, half-silent estimate,
    oracle with trailing junk (longer estimates)."""
    ref_a = make_stems(10, seconds=SECONDS, sr=SR, channels=1)
    ref_b = make_stems(11, seconds=SECONDS, sr=SR, channels=1)
    noisy = with_noise(ref_b, 10.0, seed=1)
    swapped = {**noisy, "bass": ref_b["drums"], "drums": ref_b["bass"]}
    half = dict(noisy)
    half["vocals"] = noisy["vocals"].copy()
    half["vocals"][: 2 * SR] = 0.0  # frames 0 and 1 silent in one estimate
    rng = np.random.default_rng(5)
    longer = {lb: np.concatenate([x, rng.standard_normal((300, 1)).astype(np.float32)]) for lb, x in ref_a.items()}
    return [("e-oracle", ref_a, ref_a), ("d-noisy", ref_b, noisy), ("c-swapped", ref_b, swapped),
            ("b-halfsilent", ref_b, half), ("a-longer", ref_a, longer)]


@pytest.fixture(scope="module")
def scored(tracks) -> pd.DataFrame:
    return score_tracks(tracks, SR)


def row(df: pd.DataFrame, tid: str, target: str) -> pd.Series:
    sel = df[(df.track_id == tid) & (df.target == target)]
    assert len(sel) == 1
    return sel.iloc[0]


# ----------------------------------------------------------------------------- museval-backed
def test_rows_sorted_and_typed(scored):
    assert list(scored.columns) == list(COLUMNS)
    tids = sorted(["e-oracle", "d-noisy", "c-swapped", "b-halfsilent", "a-longer"])
    assert scored.track_id.tolist() == [t for t in tids for _ in LABELS]
    assert scored.target.tolist() == list(LABELS) * len(tids)
    assert scored.frames.dtype == np.int64 and scored.sdr.dtype == np.float64


def test_oracle_scores_very_high(scored):
    for lb in LABELS:
        r = row(scored, "e-oracle", lb)
        assert r.sdr > 60, (lb, r.sdr)  # ~300 dB or +inf (zero residual in a frame)
        assert r.sdr_utt > 60
        assert r.frames == int(SECONDS)


def test_longer_estimates_are_truncated(scored):
    """museval pad_or_truncate: trailing samples beyond the reference are ignored (bitwise same as the oracle)."""
    for lb in LABELS:
        a, o = row(scored, "a-longer", lb), row(scored, "e-oracle", lb)
        assert (a.sdr, a.sdr_utt, a.frames) == (o.sdr, o.sdr_utt, o.frames)


def test_noisy_estimate_scores_its_snr(scored):
    for lb in LABELS:
        r = row(scored, "d-noisy", lb)
        # white noise at exactly 10 dB: BSSEval's 512-tap filters absorb almost none of it (measured 9.83-10.01 dB)
        assert abs(r.sdr - 10.0) < 0.5, (lb, r.sdr)
        assert abs(r.sdr_utt - 10.0) < 0.1


def test_swapped_estimates_score_much_lower(scored):
    for lb in ("bass", "drums"):
        good, bad = row(scored, "d-noisy", lb), row(scored, "c-swapped", lb)
        assert bad.sdr < good.sdr - 10, (lb, good.sdr, bad.sdr)
        assert bad.sdr_utt < good.sdr_utt - 10
        assert bad.sdr_utt < 0  # a wrong stem is worse than silence
    # untouched targets keep a sane score (museval couples targets only through the shared projection)
    for lb in ("vocals", "other"):
        assert np.isfinite(row(scored, "c-swapped", lb).sdr)


def test_partially_silent_estimate_drops_those_frames_for_all_targets(scored):
    """museval's framewise rule: a frame where any estimate is silent is NaN for every target."""
    for lb in LABELS:
        r = row(scored, "b-halfsilent", lb)
        assert r.frames == int(SECONDS) - 2
        assert np.isfinite(r.sdr)


def test_parallel_equals_serial_exactly(tracks, scored):
    sub = [tracks[i] for i in (0, 2)]  # oracle and swapped, given out of track_id order; one round of 2 workers
    par = score_tracks(iter(sub), SR, workers=2)
    ser = scored[scored.track_id.isin([t[0] for t in sub])].reset_index(drop=True)
    pd.testing.assert_frame_equal(par, ser, check_exact=True)
    # bitwise, NaN/inf included
    assert np.array_equal(par.sdr.to_numpy().view(np.int64), ser.sdr.to_numpy().view(np.int64))
    assert np.array_equal(par.sdr_utt.to_numpy().view(np.int64), ser.sdr_utt.to_numpy().view(np.int64))
    with museval_pool(2) as pool:  # one pool shared by several calls (evaluate: every chunk of test songs)
        first, second = (score_tracks(iter([t]), SR, workers=2, pool=pool) for t in sub)
    pd.testing.assert_frame_equal(pd.concat([second, first], ignore_index=True), ser, check_exact=True)


def test_silent_reference_matches_museval_framewise_rule(monkeypatch):
    """museval refuses a whole-silent reference (ValueError); with its validation skipped, its own framewise rule
    makes every frame NaN for every target -- exactly what bsseval_track returns without calling it."""
    import museval
    import museval.metrics

    refs = make_stems(12, seconds=2.0, sr=SR, channels=1)
    refs["vocals"] = np.zeros_like(refs["vocals"])
    ests = with_noise(refs, 10.0, seed=2)
    ests["vocals"] = make_stems(13, seconds=2.0, sr=SR, channels=1)["vocals"]
    stack_r = np.stack([refs[lb] for lb in LABELS]).astype(np.float64)
    stack_e = np.stack([ests[lb] for lb in LABELS]).astype(np.float64)
    with pytest.raises(ValueError, match="non-silent"):
        museval.evaluate(stack_r, stack_e, win=SR, hop=SR)

    ours = bsseval_track(refs, ests, SR)
    monkeypatch.setattr(museval.metrics, "validate", lambda *a: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, *_ = museval.evaluate(stack_r, stack_e, win=SR, hop=SR)
    assert theirs.shape == (4, 2) and np.isnan(theirs).all()
    for lb in LABELS:
        assert ours[lb].shape == (2,) and np.isnan(ours[lb]).all()


# ----------------------------------------------------------------------------- silence (no museval call)
def test_silent_estimate_is_unscored_by_bsseval_and_zero_db_utterance():
    """What the metrics actually do with an all-zero estimate: museval raises (so the track gets NaN frames,
    frames == 0, like any silent frame), while the utterance SDR is exactly 0 dB -- the MDX 'silence' baseline,
    below anything that reconstructs part of the stem."""
    refs = make_stems(20, seconds=SECONDS, sr=SR)  # stereo
    ests = with_noise(refs, 10.0, seed=3)
    ests["bass"] = np.zeros_like(refs["bass"])
    rows = score_track("silent-est", refs, ests, SR)
    assert [r["target"] for r in rows] == list(LABELS)
    for r in rows:
        assert math.isnan(r["sdr"]) and r["frames"] == 0
    bass = rows[LABELS.index("bass")]
    assert abs(bass["sdr_utt"]) < 1e-6
    assert all(abs(r["sdr_utt"] - 10.0) < 0.1 for r in rows if r["target"] != "bass")
    # a quiet but correct estimate beats silence; a wrong stem is worse than silence
    assert utterance_sdr(refs["bass"], 0.2 * refs["bass"]) > bass["sdr_utt"]
    assert utterance_sdr(refs["bass"], refs["drums"]) < bass["sdr_utt"]


def test_all_nan_target_survives_summarize():
    refs = make_stems(21, seconds=2.0, sr=SR)
    refs["vocals"] = np.zeros_like(refs["vocals"])
    rows = score_track("no-vocals", refs, refs, SR)
    assert all(math.isnan(r["sdr"]) and r["frames"] == 0 for r in rows)
    v = rows[0]
    assert v["target"] == "vocals" and v["sdr_utt"] == 0.0  # (0 + eps) / (0 + eps)
    df = pd.DataFrame(rows + [{"track_id": "ok", "target": lb, "sdr": 5.0 + i, "sdr_utt": 4.0, "frames": 2}
                              for i, lb in enumerate(LABELS)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no All-NaN RuntimeWarnings either
        s = summarize(df)
    assert s["sdr_vocals"] == 5.0 and s["sdr_other"] == 8.0  # NaN track ignored
    only_nan = summarize(pd.DataFrame(rows))
    assert all(math.isnan(only_nan[f"sdr_{lb}"]) for lb in LABELS) and math.isnan(only_nan["sdr_avg"])
    assert only_nan["tracks"] == 1


# ----------------------------------------------------------------------------- utterance SDR
@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 25.0])
def test_utterance_sdr_recovers_known_snr(snr):
    refs = make_stems(30, seconds=SECONDS, sr=SR)
    noisy = with_noise(refs, snr, seed=4)
    for lb in LABELS:
        assert abs(utterance_sdr(refs[lb], noisy[lb]) - snr) < 0.1


def test_utterance_sdr_pads_short_estimates():
    s = make_stems(31, seconds=1.0, sr=SR)["other"].astype(np.float64)
    k = 1000
    expected = 10 * np.log10((np.sum(s ** 2) + 1e-8) / (np.sum(s[-k:] ** 2) + 1e-8))
    assert utterance_sdr(s, s[:-k]) == pytest.approx(expected, abs=1e-9)
    assert utterance_sdr(s, np.vstack([s, np.ones((k, 2))])) == utterance_sdr(s, s) > 90  # longer: cut


def test_input_validation():
    refs = make_stems(32, seconds=1.0, sr=SR)
    with pytest.raises(KeyError, match="drums"):
        bsseval_track(refs, {k: v for k, v in refs.items() if k != "drums"}, SR)
    with pytest.raises(ValueError, match="channels"):
        bsseval_track(refs, {**refs, "bass": refs["bass"][:, :1]}, SR)
    silent = {**refs, "vocals": np.zeros_like(refs["vocals"])}  # NaN fast path: no museval call
    with pytest.raises(ValueError, match="twice"):
        score_tracks([("x", silent, silent), ("x", silent, silent)], SR)
    empty = score_tracks([], SR)
    assert list(empty.columns) == list(COLUMNS) and len(empty) == 0


# ----------------------------------------------------------------------------- aggregation
def test_summarize_is_median_over_tracks_and_mean_of_medians():
    per_track = {  # target -> per-track frame-median SDRs (3 tracks) and utterance SDRs
        "vocals": ([1.0, 2.0, 9.0], [0.0, 3.0, 6.0]),
        "bass": ([4.0, -1.0, 0.5], [1.0, 1.0, 1.0]),
        "drums": ([3.0, 3.0, 100.0], [2.0, 4.0, 6.0]),
        "other": ([0.25, 7.0, 0.75], [-3.0, 0.0, 0.0]),
    }
    rows = [{"track_id": f"t{i}", "target": lb, "sdr": sdr[i], "sdr_utt": utt[i], "frames": 10}
            for lb, (sdr, utt) in per_track.items() for i in range(3)]
    s = summarize(pd.DataFrame(rows))
    assert s["sdr_vocals"] == 2.0 and s["sdr_bass"] == 0.5 and s["sdr_drums"] == 3.0 and s["sdr_other"] == 0.75
    assert s["sdr_avg"] == round((2.0 + 0.5 + 3.0 + 0.75) / 4, 3) == 1.562
    assert s["sdr_utt_vocals"] == 3.0 and s["sdr_utt_drums"] == 4.0 and s["sdr_utt_other"] == -1.0
    assert s["sdr_utt_avg"] == round((3.0 + 1.0 + 4.0 - 1.0) / 4, 3)
    assert s["tracks"] == 3
    assert list(s) == [f"sdr_{lb}" for lb in LABELS] + ["sdr_avg"] + [f"sdr_utt_{lb}" for lb in LABELS] + \
        ["sdr_utt_avg", "tracks"]
    assert all(type(v) is float for k, v in s.items() if k != "tracks")

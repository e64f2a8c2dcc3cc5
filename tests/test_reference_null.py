"""Fusion against each component's clean null (`calibration: reference`): smoothed conformal p-values, Sidak's
correction, song p-values calibrated on the reference songs, and Storey's share of clean songs read from them.
Score tables are generated here: a component with no signal whose clean scores are heavy-tailed next to one that
sees the defect."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from stemsift.clean import CleanerError, StemView, get_cleaner
from stemsift.clean.fusion import conformal_p, sidak
from stemsift.clean.ratio import auto_keep, storey_pi0

LABELS = ["bass", "drums", "other", "vocals"]


def test_conformal_p_is_monotone_in_range_and_uniform_for_clean_scores():
    rng = np.random.default_rng(0)
    p = conformal_p(np.linspace(-6, 6, 121), rng.normal(size=12))
    assert np.all(np.diff(p) >= 0) and np.all(np.diff(p)[p[1:] < 0.99] > 0)  # ties only where Phi saturates
    assert p.min() > 0 and p.max() <= 1
    hits = [conformal_p(rng.normal(size=1), rng.normal(size=12))[0] <= 0.1 for _ in range(4000)]
    assert abs(np.mean(hits) - 0.1) < 0.02  # valid: a clean score lands below 0.1 one time in ten


def test_sidak_corrects_the_smallest_of_m():
    assert np.allclose(sidak(0.3, 1), 0.3)
    assert np.isclose(sidak(1e-9, 12), 12e-9, rtol=1e-6)
    assert np.isclose(sidak(0.5, 2), 0.75)


def test_storey_recovers_the_clean_share_and_refuses_scores_that_are_not_p_values():
    rng = np.random.default_rng(1)
    p = pd.Series(np.concatenate([rng.uniform(size=140), rng.uniform(0, 0.02, size=60)]),
                  index=[f"s{i}" for i in range(200)])
    assert abs(storey_pi0(p.to_numpy()) - 0.7) < 0.1
    a = auto_keep(p, "storey")
    assert abs(a.ratio - 0.7) < 0.1 and a.method == "storey"
    assert all(p[k] >= p.drop(list(a.keep)).max() for k in a.keep)  # the kept songs are the top-r
    with pytest.raises(ValueError, match="storey needs each song's p-value against the reference songs"):
        auto_keep(p * 10 - 3, "storey")
    assert auto_keep(p.iloc[:5], "storey", min_songs=10).ratio == 1.0


def tables(seed: int, songs: int = 40, defective: int = 10, reference: int = 12):
    """`noisy`: Cauchy scores for every stem (no signal; clean outliers far out). `sees`: normal scores, and one
    stem of each defective song 3.5 sd low. Nulls: the same distributions on the reference songs."""
    rng = np.random.default_rng(seed)
    rows = lambda n, prefix: pd.DataFrame([(f"{prefix}{i}", lb) for i in range(n) for lb in LABELS],  # noqa: E731
                                          columns=["track_id", "label"])
    train, ref = rows(songs, "t"), rows(reference, "r")
    bad = {f"t{i}" for i in range(defective)}
    sees = rng.normal(size=len(train))
    first = ~train.duplicated("track_id")
    sees[(train.track_id.isin(bad) & first).to_numpy()] -= 3.5
    out = {}
    for name, s, null in (("noisy", rng.standard_cauchy(len(train)), rng.standard_cauchy(len(ref))),
                          ("sees", sees, rng.normal(size=len(ref)))):
        t = train.assign(score=s)
        out[name] = (t.assign(song_score=t.track_id.map(t.groupby("track_id").score.min())), ref.assign(score=null))
    truth = pd.Series([t in bad for t in train.track_id.unique()], index=train.track_id.unique())
    return train, ref, out, truth


def fused(seed: int, calibration: str) -> tuple[pd.Series, pd.Series]:
    train, ref, comps, truth = tables(seed)
    view = StemView(train=train, reference=ref, load_audio=None, scores={c: t for c, (t, _) in comps.items()},
                    nulls={c: n for c, (_, n) in comps.items()})
    table = get_cleaner("blind", {"components": list(comps), "calibration": calibration, "song": "worst"}).score(view)
    return table.groupby("track_id").song_score.first().reindex(truth.index), truth


def test_a_heavy_tailed_component_without_signal_dilutes_less_against_its_null():
    auc = {c: np.mean([roc_auc_score(~t, s) for s, t in (fused(k, c) for k in range(8))])
           for c in ("training", "reference")}
    assert auc["reference"] > auc["training"] + 0.05, auc
    assert auc["reference"] > 0.85, auc


def test_song_scores_are_p_values_uniform_for_clean_songs():
    clean = np.concatenate([s[~t].to_numpy() for s, t in (fused(k, "reference") for k in range(8))])
    assert clean.min() >= 0 and clean.max() <= 1  # valid at the reference's resolution, 1 / (12 + 1)
    assert abs(clean.mean() - 0.5) < 0.08
    assert all(abs(np.mean(clean <= q) - q) < 0.08 for q in (0.25, 0.5, 0.75)), [np.mean(clean <= q) for q in (0.25, 0.5, 0.75)]


def test_a_component_without_a_null_is_read_against_the_training_stems_with_a_warning(capsys):
    train, ref, comps, truth = tables(0)
    view = StemView(train=train, reference=ref, load_audio=None, scores={c: t for c, (t, _) in comps.items()},
                    nulls={"sees": comps["sees"][1]})
    table = get_cleaner("blind", {"components": ["noisy", "sees"], "calibration": "both"}).score(view)
    assert "'noisy' has no clean null" in capsys.readouterr().out
    songs = table.groupby("track_id").song_score.first().reindex(truth.index)
    assert songs.between(0, 1).all()  # still p-values
    both = get_cleaner("blind", {"components": ["noisy", "sees"], "calibration": "both"})
    with_null = both.score(StemView(train=train, reference=ref, load_audio=None,
                                    scores={c: t for c, (t, _) in comps.items()}, nulls={c: n for c, (_, n) in comps.items()}))
    assert not np.allclose(with_null.score, table.score)  # the null is read when it is there
    with pytest.raises(CleanerError, match="blind.song"):
        get_cleaner("blind", {"components": ["noisy", "sees"], "calibration": "reference", "song": "components"}).components()


def test_training_calibration_writes_song_p_against_the_reference_songs_and_storey_reads_it():
    shares, clean = [], []
    for k in range(8):
        train, ref, comps, truth = tables(k)
        view = StemView(train=train, reference=ref, load_audio=None, scores={c: t for c, (t, _) in comps.items()},
                        nulls={c: n for c, (_, n) in comps.items()})
        table = get_cleaner("blind", {"components": list(comps), "calibration": "training"}).score(view)
        songs = table.groupby("track_id")[["song_score", "song_p"]].first().reindex(truth.index)
        order = songs.sort_values("song_score")
        assert order.song_p.is_monotonic_increasing  # a monotone map of the score: the ranking is unchanged
        clean.append(songs.song_p[~truth].to_numpy())
        a = auto_keep(songs.song_score, "storey", song_p=songs.song_p)
        rest = songs.song_score.drop(list(a.keep))
        assert rest.empty or songs.song_score[list(a.keep)].min() >= rest.max()  # the top-r by score
        shares.append(a.ratio)
    clean = np.concatenate(clean)
    assert abs(np.mean(clean <= 0.5) - 0.5) < 0.1, np.mean(clean <= 0.5)  # clean songs' p near uniform
    assert abs(np.mean(shares) - 0.75) < 0.08, shares  # 30 clean songs of 40
    gmm = np.mean([auto_keep(fused(k, "training")[0], "gmm").ratio for k in range(8)])
    assert abs(np.mean(shares) - 0.75) < abs(gmm - 0.75), (shares, gmm)


def test_storey_without_a_reference_null_fails_in_one_line():
    train, ref, comps, truth = tables(0)
    view = StemView(train=train, reference=ref, load_audio=None, scores={c: t for c, (t, _) in comps.items()},
                    nulls={"sees": comps["sees"][1]})
    table = get_cleaner("blind", {"components": list(comps), "calibration": "training"}).score(view)
    assert "song_p" not in table  # a component without a null: no song null on the training scale
    with pytest.raises(ValueError, match="storey needs each song's p-value"):
        auto_keep(table.groupby("track_id").song_score.first(), "storey")

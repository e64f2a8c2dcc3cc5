"""The `level` control cleaner, and the simulator it guards: a loudness-only score must not find the defects."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import make_stems
from stemsift import LABELS
from stemsift.clean import CleanerError, StemView, get_cleaner
from stemsift.clean.base import robust_z
from stemsift.clean.level import level_table
from stemsift.clean.metrics import song_truth
from stemsift.params import ContaminateParams
from stemsift.stages.contaminate import contaminate_stemset
from stemsift.stemset import StemSet, StemSetWriter

SR = 8000


def view_of(songs: dict[str, dict[str, np.ndarray]]) -> StemView:
    rows = pd.DataFrame([(tid, lb) for tid in songs for lb in LABELS], columns=["track_id", "label"])
    return StemView(train=rows, reference=rows.iloc[:0], load_audio=lambda tid, lb: songs[tid][lb], sample_rate=SR)


def scores(songs, **options) -> pd.DataFrame:
    return get_cleaner("level", options).score(view_of(songs))


def gained(stems: dict[str, np.ndarray], db: float) -> dict[str, np.ndarray]:
    return {lb: (x * 10 ** (db / 20)).astype(np.float32) for lb, x in stems.items()}


def test_level_flags_a_stem_too_loud_or_too_quiet_for_its_label():
    songs = {f"s{i:02d}": make_stems(i, 1.0, SR, 1) for i in range(12)}
    songs["s03"] = dict(songs["s03"], vocals=songs["s03"]["vocals"] * np.float32(4.0))  # +12 dB vocals
    songs["s07"] = dict(songs["s07"], drums=songs["s07"]["drums"] * np.float32(0.25))   # -12 dB drums
    both = scores(songs)
    low = both.nsmallest(2, "score")
    assert set(zip(low.track_id, low.label)) == {("s03", "vocals"), ("s07", "drums")}
    song = both.groupby("track_id").song_score.first()
    assert set(song.nsmallest(2).index) == {"s03", "s07"}
    assert np.allclose(song, both.groupby("track_id").score.mean())  # song = mean of its stems
    high = scores(songs, sign="high").groupby("track_id").song_score.first()
    quiet = scores(songs, sign="low").groupby("track_id").song_score.first()
    assert high.idxmin() == "s03" and quiet.idxmin() == "s07"  # one side only


def test_level_ignores_a_common_gain_and_survives_silence():
    songs = {f"s{i:02d}": make_stems(i, 1.0, SR, 1) for i in range(10)}
    a = scores(songs)
    b = scores({tid: gained(s, -10.0) for tid, s in songs.items()})  # the whole set 10 dB quieter: same z
    np.testing.assert_allclose(a.score, b.score, atol=1e-3)
    songs["s04"] = dict(songs["s04"], bass=np.zeros_like(songs["s04"]["bass"]))
    c = scores(songs)
    assert np.isfinite(c.score).all()


def test_level_rejects_an_unknown_sign():
    with pytest.raises(CleanerError, match="level.sign"):
        scores({"s00": make_stems(0, 1.0, SR, 1)}, sign="loud")


# --------------------------------------------------------------------- the simulator leaks no loudness

def raw_set(root, n_train: int, seed: int = 0) -> StemSet:
    """Band-noise songs at the levels a collection has: a song level spread and a per-stem balance spread."""
    rng = np.random.default_rng(seed)
    w = StemSetWriter(root, SR, 1, source="synthetic")
    for i in range(n_train + 1):
        split = "train" if i < n_train else "reference"
        stems = make_stems(seed * 1000 + i, 2.0, SR, 1)
        song_db = rng.uniform(-9.0, 0.0)
        w.add_track(f"{split}-{i:03d}", split, {lb: gained({lb: x}, song_db + rng.uniform(-3, 3))[lb]
                                                 for lb, x in stems.items()})
    return w.close()


def loudness_aucs(ss: StemSet, truth: pd.DataFrame) -> dict[str, float]:
    """Song AUC (either sign: max(AUC, 1 - AUC)) of each loudness statistic for 'song is defective', over all
    defective songs and per kind; 'abs' statistics are |robust z| (too loud and too quiet both count)."""
    table = level_table(StemView.of(ss))
    song = table.groupby("track_id")[["mix_rms_db", "mix_peak_db"]].first()
    table["stem_rms_z"] = table.groupby("label").stem_rms_db.transform(robust_z)
    song["stem_rms_z"] = table.groupby("track_id").stem_rms_z.mean()
    for f in ("mix_rms_db", "mix_peak_db"):
        song[f"{f}_abs"] = robust_z(song[f]).abs()
    kind = truth.groupby("track_id").kind.agg(lambda k: next((x for x in k if x), "clean")).reindex(song.index)
    out = {}
    for group in ["all", *sorted(set(kind) - {"clean"})]:
        pos = (kind != "clean") if group == "all" else (kind == group)
        keep = (kind == "clean") | pos
        for f in song:
            a = roc_auc_score(pos[keep], song.loc[keep, f])
            out[f"{group}:{f}"] = max(a, 1 - a)
    return out


@pytest.fixture(scope="module")
def effects_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("level")
    raw = raw_set(tmp / "raw", 48)
    truth = contaminate_stemset(raw, tmp / "contaminated", ContaminateParams(preset="effects", seed=3))
    return StemSet(tmp / "contaminated"), truth


def test_loudness_alone_does_not_find_the_effect_songs(effects_world):
    """A leaky simulator (clean songs copied, defective ones rescaled, distortion louder) fails here: loudness
    then finds the distorted songs outright, and |z| of the mixture level finds louder and quieter ones alike."""
    ss, truth = effects_world
    assert len(set(truth.track_id)) >= 24
    aucs = loudness_aucs(ss, truth)
    for key in ("all:mix_rms_db", "all:mix_peak_db", "all:stem_rms_z", "all:mix_rms_db_abs", "all:mix_peak_db_abs"):
        assert aucs[key] < 0.75, (key, aucs)
    for kind in ("distortion", "reverb", "lowpass"):
        assert aucs[f"{kind}:mix_rms_db"] < 0.8, (kind, aucs)  # 8 songs of a kind against 24 clean: chance spread


def test_level_cleaner_scores_near_chance_on_the_effects_world(effects_world):
    ss, truth = effects_world
    table = get_cleaner("level").score(StemView.of(ss))
    song = table.groupby("track_id").song_score.first()
    bad = song_truth(truth).reindex(song.index) != "clean"
    assert roc_auc_score(bad, -song) < 0.75

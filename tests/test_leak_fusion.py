"""`leak` calibrated to the music (coherence against the clean reference songs' own, per label pair) and fusion
from stems (a fused song score built from the fused stem scores), on generated homophonic audio and small
generated score tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stemsift.clean import CleanerError, StemView, get_cleaner
from stemsift.clean.fusion import fuse

SR = 8000
SECONDS = 4.0
LEAK = {"n_fft": 512, "hop": 128}  # 8 kHz: the same 64 ms window as 2048 at 32 kHz, fast


def homophonic(seed: int) -> dict[str, np.ndarray]:
    """One chorale-like song: every part follows one chord progression and one rhythm. `other` doubles the bass
    line an octave up (strongly coherent with it, as doublings are), `vocals` sings chord tones above, `drums` hits
    noise on the shared beat: the clean pairs have very different coherence, none near independence's ~1/frames."""
    rng = np.random.default_rng(seed)
    n, beat = int(SECONDS * SR), SR // 2
    t = np.arange(n) / SR
    roots = 110 * 2 ** (rng.integers(0, 12, size=n // beat + 1) / 12)  # a chord per beat
    f0 = np.repeat(roots, beat)[:n]
    env = np.tile(np.exp(-np.arange(beat) / (0.25 * beat)), n // beat + 1)[:n]  # shared attack-decay per beat
    phase = 2 * np.pi * np.cumsum(f0) / SR

    def tone(mult: float, harmonics: int) -> np.ndarray:
        return sum(np.sin(h * mult * phase + rng.uniform(0, 2 * np.pi)) / h for h in range(1, harmonics + 1))

    noise = lambda level: level * rng.standard_normal(n)  # noqa: E731  each part's own breath / bow noise
    stems = {"bass": env * tone(1, 4) + noise(0.05),
             "other": env * tone(2, 4) + 0.6 * env * tone(3, 3) + noise(0.05),
             "vocals": env * tone(2 * 2 ** (4 / 12), 3) * (1 + 0.3 * np.sin(2 * np.pi * 5 * t)) + noise(0.05),
             "drums": env ** 4 * rng.standard_normal(n) + noise(0.02)}
    return {lb: (0.2 * x / np.abs(x).max())[:, None].astype(np.float32) for lb, x in stems.items()}


def bleed(song: dict[str, np.ndarray], victim: str, source: str, db: float) -> dict[str, np.ndarray]:
    """An attenuated copy of one stem leaking into another (a microphone hearing its neighbour)."""
    return {**song, victim: song[victim] + 10 ** (db / 20) * song[source]}


def view_of(train: dict[str, dict], reference: dict[str, dict]) -> StemView:
    """A StemView over in-memory songs (track_id -> label -> audio): the cleaner reads through load_audio."""
    audio = {(tid, lb): x for songs in (train, reference) for tid, s in songs.items() for lb, x in s.items()}
    rows = lambda songs, split: pd.DataFrame([{"track_id": tid, "label": lb, "split": split}  # noqa: E731
                                              for tid, s in songs.items() for lb in s])
    return StemView(train=rows(train, "train"), reference=rows(reference, "reference"),
                    load_audio=lambda tid, lb: audio[(tid, lb)], sample_rate=SR)


BLED = "train-bled"


@pytest.fixture(scope="module")
def chorales():
    """10 clean reference chorales; 8 clean training chorales and one whose vocals hear the drums 20 dB down."""
    reference = {f"ref-{i}": homophonic(100 + i) for i in range(10)}
    train = {f"train-{i}": homophonic(i) for i in range(8)}
    train[BLED] = bleed(homophonic(50), "vocals", "drums", -20.0)
    return train, reference


def test_calibrated_leak_keeps_clean_chorales_typical_and_puts_a_weak_bleed_far_below(chorales):
    train, reference = chorales
    table = get_cleaner("leak", LEAK).score(view_of(train, reference))
    songs = table.groupby("track_id").song_score.first()
    clean = songs.drop(BLED)
    # a clean song of this collection sits where the reference's clean songs sit: its worst of 6 pairs a few z down
    assert clean.min() > -4.0 and clean.median() > -3.0, clean
    bled = table[(table.track_id == BLED) & (table.label == "vocals")].score.iloc[0]
    assert bled < clean.min() - 4.0, (bled, clean.min())
    assert songs.idxmin() == BLED
    # the independence premise fails here: uncalibrated, a clean doubling looks more coherent than the bleed
    raw = get_cleaner("leak", {**LEAK, "calibration": "none"}).score(view_of(train, reference))
    raw_bled = raw[(raw.track_id == BLED) & (raw.label == "vocals")].score.iloc[0]
    raw_bass = raw[(raw.track_id != BLED) & (raw.label == "bass")].score
    assert raw_bled > raw_bass.max(), (raw_bled, raw_bass.max())


def test_two_sided_leak_also_flags_a_decorrelated_stem(chorales):
    """A stem whose phase relation to its partners is destroyed (a long diffuse reverb tail) is *less* coherent
    than clean: only the two-sided score raises it."""
    train, reference = chorales
    rng = np.random.default_rng(7)
    ir = rng.standard_normal(SR) * np.exp(-np.arange(SR) / (0.3 * SR))  # 1 s decaying-noise impulse response
    dry = train["train-3"]["other"][:, 0]
    wet = np.convolve(dry, ir)[:len(dry)]
    train = {**train, "train-3": {**train["train-3"], "other": (0.2 * wet / np.abs(wet).max())[:, None].astype(np.float32)}}
    one = get_cleaner("leak", LEAK).score(view_of(train, reference))
    two = get_cleaner("leak", {**LEAK, "sided": "two"}).score(view_of(train, reference))
    pick = lambda t: t.groupby("track_id").song_score.first()  # noqa: E731
    assert pick(two).nsmallest(2).index.tolist() in ([BLED, "train-3"], ["train-3", BLED]), pick(two)
    assert pick(one).rank()["train-3"] > 2, pick(one)  # one-sided: decorrelation is not an alarm


def test_a_label_with_one_reference_song_uses_the_pooled_clean_coherence(chorales):
    train, reference = chorales
    reference = {tid: ({lb: x for lb, x in s.items() if lb != "drums"} if i else s)
                 for i, (tid, s) in enumerate(reference.items())}  # drums in one reference song only
    for min_songs in (1, 5):
        table = get_cleaner("leak", {**LEAK, "min_songs": min_songs}).score(view_of(train, reference))
        assert np.isfinite(table.score).all()
        assert table.groupby("track_id").song_score.first().idxmin() == BLED, min_songs
    with pytest.raises(CleanerError, match="leak.calibration"):
        get_cleaner("leak", LEAK).score(view_of(train, {"ref-0": {"bass": reference["ref-0"]["bass"]}}))
    for bad, key in [({"calibration": "psychic"}, "leak.calibration"), ({"sided": "both"}, "leak.sided"),
                     ({"min_songs": 0}, "leak.min_songs")]:
        with pytest.raises(CleanerError, match=key):
            get_cleaner("leak", {**LEAK, **bad}).score(view_of(train, reference))


LABELS = ["vocals", "bass", "drums", "other"]
ALARMED, SPREAD = "song-00", "song-01"


def component_tables(songs: int = 30) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Two components' stem scores (noise) over `songs` songs; component `a` alarms strongly on one stem of ALARMED,
    component `b` mildly on every stem of SPREAD. Each component's song score is its stems' mean (as fad's)."""
    rng = np.random.default_rng(3)
    train = pd.DataFrame([{"track_id": f"song-{i:02d}", "label": lb} for i in range(songs) for lb in LABELS])
    a, b = rng.normal(size=len(train)), rng.normal(size=len(train))
    a[((train.track_id == ALARMED) & (train.label == "vocals")).to_numpy()] = -6.0
    b[(train.track_id == SPREAD).to_numpy()] -= 3.5
    tables = {}
    for name, s in {"a": a, "b": b}.items():
        t = train.assign(score=s)
        tables[name] = t.assign(song_score=t.track_id.map(t.groupby("track_id").score.mean()))
    return train, tables


def fused_songs(song: str) -> pd.Series:
    train, tables = component_tables()
    view = StemView(train=train, reference=train.iloc[:0], load_audio=None, scores=tables)
    table = get_cleaner("blind", {"components": ["a", "b"], "song": song, "calibration": "training"}).score(view)
    return table.groupby("track_id").song_score.first(), table


def test_one_alarmed_stem_puts_its_song_at_the_bottom_under_worst_not_under_components():
    worst, table = fused_songs("worst")
    assert worst.idxmin() == ALARMED
    assert np.allclose(worst, table.groupby("track_id").score.min())  # the song is its worst fused stem
    mean, table = fused_songs("mean")
    assert np.allclose(mean, table.groupby("track_id").score.mean())
    comps, _ = fused_songs("components")  # the song means dilute the one alarm: the spread song wins the bottom
    assert comps.idxmin() == SPREAD and comps.rank()[ALARMED] > 1
    _, tables = component_tables()
    songs = pd.DataFrame({c: t.groupby("track_id").song_score.first() for c, t in tables.items()})
    assert np.allclose(comps, fuse(songs, "soft_min").reindex(comps.index))  # components = the earlier behaviour
    with pytest.raises(CleanerError, match="blind.song"):
        get_cleaner("blind", {"components": ["a", "b"], "song": "median"}).components()


def test_hybrid_song_from_stems_uses_the_fused_blind_stem_scores():
    """hybrid's component `blind` is itself a fusion: its fused stem z-scores enter hybrid's per-label z."""
    train, tables = component_tables()
    view = StemView(train=train, reference=train.iloc[:0], load_audio=None, scores=dict(tables))
    view.scores["blind"] = get_cleaner("blind", {"components": ["a", "b"], "calibration": "training"}).score(view)
    view.scores["mlp"] = train.assign(score=0.0, song_score=0.0)  # a specialist with no opinion
    view.scores["mlp"]["score"] = np.random.default_rng(9).normal(size=len(train))
    hybrid = get_cleaner("hybrid").score(view)
    assert hybrid.groupby("track_id").song_score.first().idxmin() == ALARMED


def test_leak_null_scores_each_reference_song_against_the_others(chorales):
    """Each reference song scored against the other reference songs' clean coherence: one row per reference stem,
    on the clean training songs' scale, and the bleed below all of it."""
    train, reference = chorales
    view = view_of(train, reference)
    table = get_cleaner("leak", LEAK).score(view)
    null = view.nulls["leak"]
    assert len(null) == len(view.reference) and set(null.track_id) == set(reference)
    clean = table[table.track_id != BLED].score
    assert abs(null.score.median() - clean.median()) < 1.5, (null.score.median(), clean.median())
    assert table.groupby("track_id").song_score.first()[BLED] < null.score.min()


def test_collection_calibration_reads_each_pair_against_the_collections_own_songs_too(chorales):
    """A reference split whose songs do not move together (each stem from another chorale) calls every clean
    chorale of the collection leaky; measured on the collection's own songs too, each pair's clean population is
    the chorales', so clean songs stop alarming and the bleed stays far below them."""
    train, _ = chorales
    labels = ["bass", "drums", "other", "vocals"]
    unrelated = {f"ref-{i}": {lb: homophonic(200 + 4 * i + j)[lb] for j, lb in enumerate(labels)} for i in range(4)}
    options = {**LEAK, "min_songs": 1}
    narrow = get_cleaner("leak", options).score(view_of(train, unrelated))
    leak = get_cleaner("leak", {**options, "calibration": "collection"})
    wide = leak.score(view_of(train, unrelated))
    songs = lambda t: t.groupby("track_id").song_score.first()  # noqa: E731
    clean_narrow, clean_wide = songs(narrow).drop(BLED), songs(wide).drop(BLED)
    assert clean_narrow.median() < -4.0, clean_narrow  # against independent references every chorale alarms
    assert clean_wide.median() > -3.0 and songs(wide).idxmin() == BLED, songs(wide)
    assert songs(wide)[BLED] < clean_wide.min() - 2.0, songs(wide)
    # the clean null: each reference song scored against the other reference songs and the training songs
    assert set(leak.null.track_id) == set(unrelated) and np.isfinite(leak.null.score).all()


def two_population_tables(songs: int = 40, seed: int = 5) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], list[str]]:
    """Component `seer` alarms on one stem of every defective song (a second population of songs); component `noise`
    sees nothing (one population) but has heavy tails, so clean songs draw strong alarms from it too."""
    rng = np.random.default_rng(seed)
    train = pd.DataFrame([{"track_id": f"song-{i:02d}", "label": lb} for i in range(songs) for lb in LABELS])
    defective = [f"song-{i:02d}" for i in range(0, songs, 2)]
    seer = rng.normal(size=len(train))
    hit = {tid: LABELS[i % 4] for i, tid in enumerate(defective)}  # one stem per defective song, labels in turn
    seer[(train.track_id.map(hit) == train.label).to_numpy()] -= 5.0
    noise = rng.standard_t(1.5, size=len(train))  # heavy-tailed: a few clean stems far out
    tables = {name: train.assign(score=s, song_score=0.0) for name, s in {"seer": seer, "noise": noise}.items()}
    return train, tables, defective


def test_bimodality_weights_quiet_a_component_that_sees_one_population():
    from sklearn.metrics import roc_auc_score

    train, tables, defective = two_population_tables()
    view = lambda: StemView(train=train, reference=train.iloc[:0], load_audio=None, scores=dict(tables))  # noqa: E731
    songs = lambda o: get_cleaner("blind", {"components": ["seer", "noise"], **o}).score(view()).groupby(  # noqa: E731
        "track_id").song_score.first()
    truth = lambda s: (~s.index.isin(defective)).astype(int)  # noqa: E731  1 = clean
    equal, weighted = songs({}), songs({"weights": "bimodality"})
    cleaner = get_cleaner("blind", {"components": ["seer", "noise"], "weights": "bimodality"})
    cleaner.score(view())
    assert cleaner.weights["seer"] == 1.0 and cleaner.weights["noise"] < 0.5, cleaner.weights
    assert roc_auc_score(truth(weighted), weighted) > roc_auc_score(truth(equal), equal) + 0.05
    assert roc_auc_score(truth(weighted), weighted) > 0.95
    for bad, key in [({"weights": "learned"}, "blind.weights"),
                     ({"weights": "bimodality", "fusion": "rank_mean"}, "blind.weights"),
                     ({"fusion": "soft_min", "temperature": 0}, "blind.temperature"),
                     ({"temperature": "warm"}, "blind.temperature"), ({"min_weight": None}, "blind.min_weight")]:
        with pytest.raises(CleanerError, match=key):
            get_cleaner("blind", {"components": ["seer", "noise"], **bad}).components()


def test_soft_min_is_below_the_minimum_and_tends_to_it():
    z = pd.DataFrame({"a": [-3.0, 0.0, -1.0], "b": [0.0, 0.0, -1.0]})
    assert (fuse(z, "soft_min") <= fuse(z, "max_z") + 1e-12).all()
    assert np.allclose(fuse(z, "soft_min", temperature=1e-3), fuse(z, "max_z"), atol=1e-2)
    soft = fuse(z, "soft_min")
    assert soft[2] < soft[1]  # two mild alarms together count more than none
    worst, _ = fused_songs("worst")
    train, tables = component_tables()
    view = StemView(train=train, reference=train.iloc[:0], load_audio=None, scores=tables)
    soft_songs = get_cleaner("blind", {"components": ["a", "b"], "fusion": "soft_min"}).score(view)
    assert soft_songs.groupby("track_id").song_score.first().idxmin() == ALARMED == worst.idxmin()

"""Tests for the SoundFont multitrack song generator (stemsift.data.synth)."""
from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from stemsift import LABELS
from stemsift.data.synth import (BASS_PROGRAMS, OTHER_FAMILIES, VOCAL_PROGRAMS, SynthConfig, default_soundfont,
                                 render_song)
from stemsift.data.textures import TEXTURES, onset_coherence
from stemsift.params import DataParams, ParamsError, stage_params

SHORT = SynthConfig(duration=4.0, channels=2, chorale_share=0.0)


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-30))


def _assert_same(a, b):
    stems_a, meta_a = a
    stems_b, meta_b = b
    assert meta_a == meta_b
    for label in LABELS:
        assert stems_a[label].dtype == stems_b[label].dtype
        assert np.array_equal(stems_a[label], stems_b[label]), label


def test_default_soundfont_exists_and_default_alias():
    assert default_soundfont().is_file()
    cfg = SynthConfig(duration=1.0, chorale_share=0.0)
    _assert_same(render_song(1, cfg), render_song(1, SynthConfig(duration=1.0, chorale_share=0.0,
                                                                  soundfont="default")))


def test_deterministic_in_process_regardless_of_call_order():
    first = render_song(5, SHORT)
    render_song(6, SHORT)  # other songs in between must not leak state (soundfont/chorale caches)
    render_song(7, SynthConfig(duration=2.0, chorale_share=1.0))
    _assert_same(first, render_song(5, SHORT))


def test_deterministic_across_processes():
    cfgs = [(11, SHORT), (12, SynthConfig(duration=4.0, channels=1, chorale_share=1.0))]
    here = [render_song(seed, cfg) for seed, cfg in cfgs]
    # a fresh interpreter: empty caches, different hash seed, different import order
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        there = [ex.submit(render_song, seed, cfg).result() for seed, cfg in cfgs]
    for a, b in zip(here, there):
        _assert_same(a, b)


def test_different_seeds_give_different_songs():
    songs = [render_song(seed, SynthConfig(duration=3.0, chorale_share=0.0)) for seed in range(4)]
    metas = [json.dumps({k: v for k, v in m.items() if k != "seed"}, sort_keys=True) for _, m in songs]
    assert len(set(metas)) == len(metas)
    for i in range(len(songs)):
        for j in range(i + 1, len(songs)):
            assert not np.array_equal(songs[i][0]["vocals"], songs[j][0]["vocals"])
    # the song-level description actually varies
    assert len({m["tempo"] for _, m in songs}) > 1
    assert len({(m["key"], m["mode"]) for _, m in songs}) > 1


@pytest.mark.parametrize("channels,rate,duration", [(1, 16000, 4.0), (2, 16000, 4.5), (2, 22050, 4.0)])
def test_shapes_frames_channels(channels, rate, duration):
    stems, meta = render_song(3, SynthConfig(sample_rate=rate, channels=channels, duration=duration,
                                             chorale_share=0.0))
    assert set(stems) == set(LABELS)
    for label in LABELS:
        x = stems[label]
        assert x.dtype == np.float32
        assert x.shape == (round(duration * rate), channels)
        assert x.flags["C_CONTIGUOUS"]
    assert meta["sample_rate"] == rate and meta["channels"] == channels
    if channels == 2:  # instruments are panned: the 'other' stem is not dual mono
        assert not np.allclose(stems["other"][:, 0], stems["other"][:, 1])


def test_levels_headroom_and_non_silence():
    mix_levels = []
    for seed in range(8):
        cfg = SynthConfig(duration=4.0, channels=1 + seed % 2, chorale_share=0.5)
        stems, meta = render_song(seed, cfg)
        mix = sum(stems[label] for label in LABELS)
        for label in LABELS:
            assert np.isfinite(stems[label]).all(), (seed, label)
            assert _rms_db(stems[label]) > -50.0, (seed, label, _rms_db(stems[label]))
        assert float(np.abs(mix).max()) <= 0.5, seed
        mix_levels.append(_rms_db(mix))
    assert max(mix_levels) - min(mix_levels) > 3.0  # song-level loudness is varied


def test_chorale_material_is_used_and_recorded():
    stems, meta = render_song(21, SynthConfig(duration=5.0, chorale_share=1.0))
    assert meta["source"] == "chorale"
    assert isinstance(meta["chorale"], str) and meta["chorale"].startswith("bwv")
    assert meta["mode"] in ("major", "minor")
    for label in LABELS:
        assert _rms_db(stems[label]) > -50.0
    _, meta0 = render_song(21, SynthConfig(duration=5.0, chorale_share=0.0))
    assert meta0["source"] == "procedural" and meta0["chorale"] is None
    # with a partial share, the seed decides: both kinds occur over a handful of seeds
    sources = [render_song(s, SynthConfig(duration=1.0, channels=1, chorale_share=0.5))[1]["source"]
               for s in range(12)]
    assert 0 < sources.count("chorale") < len(sources)


def test_meta_is_json_and_programs_fit_their_stems():
    for seed in range(3):
        _, meta = render_song(seed, SynthConfig(duration=2.0, chorale_share=0.0))
        json.dumps(meta)
        for k in ("key", "mode", "tempo", "sections", "programs", "groove"):
            assert k in meta
        assert set(meta["programs"]) == set(LABELS)
        assert all(p in VOCAL_PROGRAMS for p in meta["programs"]["vocals"])
        assert all(p in BASS_PROGRAMS for p in meta["programs"]["bass"])
        allowed = {p for progs, _ in OTHER_FAMILIES.values() for p in progs}
        assert 1 <= len(meta["programs"]["other"]) <= 3
        assert all(p in allowed for p in meta["programs"]["other"])
        assert meta["sections"] and meta["sections"][0]["start_s"] == 0.0


def test_missing_or_invalid_soundfont_raises_value_error(tmp_path):
    missing = tmp_path / "nope.sf2"
    with pytest.raises(ValueError, match="nope.sf2"):
        render_song(0, SynthConfig(duration=1.0, soundfont=str(missing)))
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"this is not a soundfont" * 10)
    with pytest.raises(ValueError, match="junk.sf2"):
        render_song(0, SynthConfig(duration=1.0, soundfont=str(junk)))


def _centroid(x: np.ndarray, rate: int) -> float:
    mag = np.abs(np.fft.rfft(x.mean(axis=1).astype(np.float64)))
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    return float((freqs * mag).sum() / mag.sum())


def test_stems_differ_in_spectral_content():
    cents = {label: [] for label in LABELS}
    for seed in range(5):
        cfg = SynthConfig(duration=5.0, chorale_share=0.4)
        stems, _ = render_song(seed, cfg)
        for label in LABELS:
            cents[label].append(_centroid(stems[label], cfg.sample_rate))
    mean = {label: float(np.mean(v)) for label, v in cents.items()}
    for label in ("vocals", "drums", "other"):
        assert mean["bass"] < mean[label], mean
    assert mean["drums"] > mean["vocals"], mean  # cymbals and snares are brighter than a sung line


# ----------------------------------------------------------------------------- textures and level spread
def _song_texture(seed: int, texture: str, **kw):
    return render_song(seed, SynthConfig(duration=4.0, channels=1, texture=texture, **kw))


@pytest.mark.parametrize("texture", TEXTURES)
def test_every_texture_renders_four_sounding_stems_deterministically(texture):
    stems, meta = _song_texture(4, texture)
    assert meta["texture"] == texture
    json.dumps(meta)
    for label in LABELS:
        assert stems[label].shape == (64000, 1) and stems[label].dtype == np.float32
        assert np.isfinite(stems[label]).all()
        assert _rms_db(stems[label]) > -50.0, (texture, label, _rms_db(stems[label]))
    assert float(np.abs(sum(stems.values())).max()) <= 0.5
    _song_texture(5, texture)  # another song in between must not leak state (corpus and soundfont caches)
    _assert_same((stems, meta), _song_texture(4, texture))


def test_textures_are_different_music_for_the_same_seed():
    songs = {t: _song_texture(2, t)[0] for t in TEXTURES}
    for label in LABELS:
        prints = {t: songs[t][label].tobytes() for t in TEXTURES}
        assert len(set(prints.values())) == len(TEXTURES), label


def test_onset_coherence_tells_shared_rhythm_from_unrelated_parts():
    # the statistic itself: one part copied into four stems is coherent, drums of four songs in four tempi are not
    drums, tempi = [], []
    for seed in range(12):
        stems, meta = _song_texture(seed, "pop")
        if all(abs(meta["tempo"] - t) > 5 for t in tempi):
            drums.append(stems["drums"])
            tempi.append(meta["tempo"])
    same = {label: drums[0] for label in LABELS}
    apart = dict(zip(LABELS, drums[:4]))
    assert onset_coherence(same, 16000) > 0.99
    assert abs(onset_coherence(apart, 16000)) < 0.2


def test_chorale_and_groove_stems_move_together_independent_ones_do_not():
    coh = {t: [onset_coherence(_song_texture(s, t)[0], 16000) for s in range(4)]
           for t in ("chorale", "groove", "independent")}
    assert abs(np.mean(coh["independent"])) < 0.1, coh  # unrelated stems: no shared onsets
    for t in ("chorale", "groove"):  # a shared beat: well above the unrelated stems
        assert np.mean(coh[t]) > np.mean(coh["independent"]) + 0.15, coh


def test_independent_stems_come_from_different_songs():
    _, meta = _song_texture(3, "independent")
    stems = meta["stems"]
    assert len({stems[label]["seed"] for label in LABELS}) == 4
    assert len({(stems[label]["key"], stems[label]["mode"], stems[label]["tempo"]) for label in LABELS}) > 1


def test_folk_sings_an_essen_tune_and_chorale_a_bach_chorale():
    folk = [_song_texture(s, "folk")[1] for s in range(3)]
    assert all(m["source"] == "folk" and m["tune"] for m in folk)
    assert len({m["tune"] for m in folk}) == 3
    chorale = _song_texture(0, "chorale")[1]
    assert chorale["source"] == "chorale" and chorale["chorale"].startswith("bwv")


def test_level_spread_changes_stem_balance_and_nothing_else():
    spread = 9.0
    widest = 0.0
    for seed in range(5):
        flat, meta0 = render_song(seed, SynthConfig(duration=2.0, channels=1, chorale_share=0.0))
        wide, meta1 = render_song(seed, SynthConfig(duration=2.0, channels=1, chorale_share=0.0,
                                                    level_spread_db=spread))
        assert meta0["programs"] == meta1["programs"] and meta0["tempo"] == meta1["tempo"]
        gain_db = []
        for label in LABELS:  # the same notes, each stem scaled by its own factor
            a, b = flat[label].astype(np.float64), wide[label].astype(np.float64)
            k = float((a * b).sum() / (a * a).sum())
            assert np.abs(b - k * a).max() < 1e-4 * np.abs(b).max(), (seed, label)
            gain_db.append(20 * np.log10(k))
        assert max(gain_db) - min(gain_db) <= 2 * spread + 0.1  # offsets stay within +-spread
        widest = max(widest, max(gain_db) - min(gain_db))
    assert widest > spread / 2  # five songs' draws do change the balance between stems
    # spread 0 is the default mix, byte for byte
    _assert_same(render_song(1, SynthConfig(duration=2.0, channels=1)),
                 render_song(1, SynthConfig(duration=2.0, channels=1, level_spread_db=0.0)))


def test_bad_texture_or_spread_fails_in_one_line_naming_the_key():
    for block, key in (({"texture": "jazz"}, "data.synthetic.texture"),
                       ({"level_spread_db": -1.0}, "data.synthetic.level_spread_db")):
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")) as e:
            stage_params({"data": {"synthetic": block}}, "data", DataParams)
        assert "\n" not in str(e.value)
    assert stage_params({"data": {"synthetic": {"texture": "folk", "level_spread_db": 6}}}, "data",
                        DataParams).synthetic.texture == "folk"
    with pytest.raises(ValueError, match="texture"):
        render_song(0, SynthConfig(duration=1.0, texture="jazz"))


MUSESCORE = Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3")  # Debian musescore-general-soundfont-small


@pytest.mark.skipif(not MUSESCORE.is_file(), reason="MuseScore_General_Lite.sf3 not installed")
def test_an_sf3_soundfont_renders_another_world():
    stems, meta = render_song(6, SynthConfig(duration=2.0, channels=1, texture="chorale", soundfont=str(MUSESCORE)))
    base, _ = render_song(6, SynthConfig(duration=2.0, channels=1, texture="chorale"))
    assert meta["soundfont"] == MUSESCORE.name
    for label in LABELS:
        assert _rms_db(stems[label]) > -50.0
        assert not np.array_equal(stems[label], base[label])

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemsift import LABELS
from stemsift.data.ingest import STEM_MP4_ORDER, ingest, track_id_from_name
from stemsift.stemset import StemSetError, StemSetWriter

from conftest import make_stems, write_input_track

SR = 8000


def run_ingest(source, root, **kw):
    w = StemSetWriter(root, SR, 2, "flac", source=str(source))
    ingest(source, w, **kw)
    return w.close()


def test_ingest_resamples_once_and_sums_exactly(input_folder, tmp_path):
    ss = run_ingest(input_folder, tmp_path / "set", reference_tracks=1, reference_from="train", seed=3)
    assert sorted(ss.tracks.split.value_counts().items()) == [("reference", 1), ("test", 2), ("train", 2)]
    assert set(ss.stems.sample_rate) == {SR} and set(ss.stems.frames) == {SR}  # 1 s at 11025 -> 8000 frames
    assert ss.validate() == []
    tid = track_id_from_name("Artist 0 - Song")
    src, _ = sf.read(str(input_folder / "train" / "Artist 0 - Song" / "bass.wav"))
    got = ss.load(tid, "bass")
    # same content after resampling: correlation of the spectra's band energy
    assert np.corrcoef(np.abs(np.fft.rfft(src[:, 0]))[:4000:10], np.abs(np.fft.rfft(got[:, 0]))[:4000:10] * 1)[0, 1] > 0.6


def test_mono_input_becomes_stereo(tmp_path):
    root = tmp_path / "in"
    write_input_track(root / "train" / "mono", make_stems(0, sr=SR, channels=1), SR)
    ss = run_ingest(root, tmp_path / "set")
    x = ss.load("mono", "vocals")
    assert x.shape == (SR, 2) and np.array_equal(x[:, 0], x[:, 1])


def _corrupt(folder: Path):
    (folder / "vocals.wav").write_bytes(np.random.default_rng(0).bytes(4000))


def _truncate(folder: Path):
    p = folder / "bass.wav"
    p.write_bytes(p.read_bytes()[:3000])


def _not_audio(folder: Path):
    (folder / "drums.wav").write_text("this is a text file, not audio\n")


def _wrong_rate(folder: Path):
    sf.write(str(folder / "other.wav"), make_stems(1, sr=16000)["other"], 16000)


def _three_channels(folder: Path):
    for lb in LABELS:
        sf.write(str(folder / f"{lb}.wav"), np.zeros((100, 3)) + 0.1, 11025)


def _nan(folder: Path):
    x = make_stems(2, sr=11025)["vocals"]
    x[10, 0] = np.nan
    sf.write(str(folder / "vocals.wav"), x, 11025, subtype="FLOAT")


def _inf(folder: Path):
    x = make_stems(2, sr=11025)["bass"].astype(np.float32)
    x[5, 1] = np.inf
    sf.write(str(folder / "bass.wav"), x, 11025, subtype="FLOAT")


def _unequal(folder: Path):
    sf.write(str(folder / "drums.wav"), make_stems(3, seconds=0.5, sr=11025)["drums"], 11025)


def _missing(folder: Path):
    (folder / "drums.wav").unlink()


def _unknown(folder: Path):
    sf.write(str(folder / "guitar.wav"), make_stems(3, sr=11025)["other"], 11025)


def _duplicate_id(folder: Path):
    shutil.copytree(folder, folder.parent.parent / "test" / folder.name.upper())


def _empty(folder: Path):
    for split in folder.parent.parent.iterdir():
        shutil.rmtree(split)
        split.mkdir()


@pytest.mark.parametrize("break_it,message,names_file", [
    (_corrupt, "unreadable audio", "vocals.wav"),
    (_truncate, "truncated audio", "bass.wav"),
    (_not_audio, "unreadable audio", "drums.wav"),
    (_wrong_rate, "sample rate 16000 Hz differs", "other.wav"),
    (_three_channels, "3 channels, expected 1 or 2", ".wav"),
    (_nan, "NaN/Inf", "vocals.wav"),
    (_inf, "NaN/Inf", "bass.wav"),
    (_unequal, "unequal stem lengths", "Artist 0 - Song"),
    (_missing, "missing stem 'drums'", "Artist 0 - Song"),
    (_unknown, "unknown stem name 'guitar'", "guitar.wav"),
    (_duplicate_id, "duplicate track id", "ARTIST 0 - SONG"),
    (_empty, "empty stem set", "musdb"),
])
def test_bad_input_is_one_line_naming_the_file(input_folder, tmp_path, break_it, message, names_file):
    break_it(input_folder / "train" / "Artist 0 - Song")
    with pytest.raises(StemSetError) as e:
        run_ingest(input_folder, tmp_path / "set")
    text = str(e.value)
    assert message in text and names_file in text and "\n" not in text


def test_silent_stem_is_ingested_with_a_flag(input_folder, tmp_path):
    folder = input_folder / "train" / "Artist 1 - Song"
    sf.write(str(folder / "other.wav"), np.zeros((11025, 2)), 11025)
    with pytest.warns(UserWarning, match="all-silent"):
        ss = run_ingest(input_folder, tmp_path / "set")
    flagged = ss.stems[ss.stems.silent]
    assert list(zip(flagged.track_id, flagged.label)) == [(track_id_from_name(folder.name), "other")]


def test_stem_mp4_is_read_in_musdb_stream_order(tmp_path):
    stempeg = pytest.importorskip("stempeg")
    if not shutil.which("ffprobe"):
        pytest.skip("ffmpeg/ffprobe not on PATH (make setup installs it)")
    example = Path(stempeg.__file__).parent / "data" / "The Easton Ellises - Falcon 69.stem.mp4"
    root = tmp_path / "musdb18"
    (root / "train").mkdir(parents=True)
    shutil.copy(example, root / "train" / example.name)
    ss = run_ingest(root, tmp_path / "set")
    tid = track_id_from_name(example.name)
    assert ss.track_ids() == [tid] == ["the_easton_ellises_falcon_69"]
    streams, rate = stempeg.read_stems(str(example), always_3d=True, dtype=np.float32)
    from stemsift.audio import resample

    for label in LABELS:  # each stem must come from its own stream: compare energies
        ref = resample(streams[STEM_MP4_ORDER.index(label)], rate, SR)
        got = ss.load(tid, label)
        gain = ss.meta(tid)["gain"]
        n = min(len(ref), len(got))
        assert np.sqrt(np.mean((got[:n] - gain * ref[:n]) ** 2)) < 1e-3, label

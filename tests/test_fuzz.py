"""Bad input, fuzzed (hypothesis): corrupted / truncated audio, wrong rates and channel counts, NaN/Inf, unequal
lengths, odd names, broken manifests and random params values. The property every time: the command ends either
successfully (and its output validates) or with the project's one-line error naming the file or key and the
fault; never a traceback; and a failed run leaves the earlier output byte for byte as it was."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stemsift import LABELS, params as P
from stemsift.cli import main
from stemsift.stemset import StemSet

from conftest import make_stems, write_input_track

SR = 8000
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(err: str, command: str) -> str:
    err = err.strip()
    assert "Traceback" not in err, err
    assert err.count("\n") == 0 and err.startswith(f"stemsift {command}: error: "), err
    return err


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)  # any exception but the project's own errors escapes here and fails the test with its traceback
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- ingest
def write_source(root: Path) -> None:
    """A small MUSDB18-HQ-style folder: 2 train and 1 test tracks, mono 8 kHz, 0.5 s."""
    for i, split in enumerate(("train", "train", "test")):
        write_input_track(root / split / f"song {i}", make_stems(i, 0.5, SR, channels=1), SR)


MUTATIONS = ("truncate", "flip", "garbage", "empty", "rate", "channels", "nan", "length", "rename_stem",
             "rename_track", "remove", "extra_file")


@st.composite
def mutation(draw):
    return { "track": draw(st.integers(0, 2)), "label": draw(st.sampled_from(LABELS)),
            "pos": draw(st.floats(0, 1)), "n": draw(st.integers(1, 8)),
            "bytes": draw(st.binary(max_size=64)),
            "rate": draw(st.sampled_from([1000, 7999, 11025, 44100])),
            "channels": draw(st.integers(1, 5)),
            "value": draw(st.sampled_from([np.nan, np.inf, -np.inf])),
            "name": draw(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                                 min_size=1, max_size=20).filter(lambda s: s not in (".", "..")))}


def apply(root: Path, m: dict) -> Path:
    """Damage one stem (or track folder) of the source; returns the path the fault is in."""
    track = sorted(p for split in ("train", "test") for p in (root / split).iterdir())[m["track"]]
    f = track / f"{m['label']}.wav"
    data = f.read_bytes()
    x, _ = sf.read(str(f), always_2d=True)
    k = m["kind"]
    if k == "truncate":
        f.write_bytes(data[:int(m["pos"] * (len(data) - 1))])
    elif k == "flip":  # flip bytes in the header, where a flip is a real fault rather than other samples
        b = bytearray(data)
        for j in range(m["n"]):
            b[(int(m["pos"] * 43) + 5 * j) % 44] ^= 0xFF
        f.write_bytes(bytes(b))
    elif k == "garbage":
        f.write_bytes(m["bytes"])
    elif k == "empty":
        f.write_bytes(b"")
    elif k == "rate":
        sf.write(str(f), x, m["rate"], subtype="PCM_16")
    elif k == "channels":
        sf.write(str(f), np.repeat(x, m["channels"], axis=1), SR, subtype="PCM_16")
    elif k == "nan":
        x = x.astype(np.float32)
        x[int(m["pos"] * (len(x) - 1)), 0] = m["value"]
        sf.write(str(f), x, SR, subtype="FLOAT")
    elif k == "length":
        sf.write(str(f), x[: max(1, int(m["pos"] * (len(x) - 1)))], SR, subtype="PCM_16")
    elif k == "rename_stem":
        f.rename(track / m["name"])
    elif k == "rename_track":
        return track.rename(track.with_name(m["name"]))
    elif k == "remove":
        f.unlink()
    elif k == "extra_file":
        (track / "notes.txt").write_text(m["name"])
    return f


def must_fail(m: dict, where: Path) -> bool:
    """Faults that no ingest may accept (a header flip may leave a readable file; a renamed folder is fine)."""
    k = m["kind"]
    return (k in ("truncate", "garbage", "empty", "nan", "length", "remove")
            or (k == "rate" and m["rate"] != SR) or (k == "channels" and m["channels"] > 2)
            or (k == "rename_stem" and m["name"] != where.name))


@pytest.mark.parametrize("kind", MUTATIONS)  # every kind of damage, each with 3 random draws of the rest
@given(m=mutation())
@settings(FUZZ, max_examples=3)
def test_ingest_of_a_damaged_folder_fails_in_one_line_and_keeps_the_earlier_set(kind, m, capsys, monkeypatch):
    m = {**m, "kind": kind}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        monkeypatch.chdir(tmp)  # stage metrics land here
        write_source(tmp / "src")
        params = tmp / "params.yaml"
        params.write_text(yaml.safe_dump({"data": {"source": str(tmp / "src"), "sample_rate": SR, "format": "wav",
                                                   "out": str(tmp / "raw"), "ingest": {"reference_tracks": 0}}}))
        assert run_cli(capsys, ["prepare", "--params", str(params)])[0] == 0
        before = tree_hashes(tmp / "raw")
        shutil.copytree(tmp / "src", tmp / "src-ok")
        where = apply(tmp / "src", m)
        rc, err = run_cli(capsys, ["prepare", "--params", str(params)])
        if must_fail(m, where):
            assert rc == 1, (m, err)
        if rc == 0:  # a harmless change (extra file, a new but valid name): the new set must be sound
            assert not [f for f in StemSet(tmp / "raw").validate() if f.fatal]
        else:
            msg = one_line_error(err, "prepare")
            named = [str(where), str(where.parent), where.name]
            assert any(s in msg for s in named), (m["kind"], msg)
            assert tree_hashes(tmp / "raw") == before
        assert not [p for p in tmp.iterdir() if ".tmp" in p.name]  # no half-written folder left behind


# ----------------------------------------------------------------------------------------------- manifest
@pytest.fixture(scope="module")
def stemset_dir(tmp_path_factory) -> Path:
    from stemsift.stemset import StemSetWriter

    w = StemSetWriter(tmp_path_factory.mktemp("set") / "set", SR, 1, source="test")
    for i, split in enumerate(("train", "train", "test")):
        w.add_track(f"{split}-{i}", split, make_stems(i, 0.5, SR, channels=1))
    return w.close().root


CELLS = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40), st.floats(allow_nan=True),
                  st.text(max_size=30), st.sampled_from(["../../etc/passwd", "/abs/path.flac", "", "train/x.flac"]))


@given(kind=st.sampled_from(["cell", "drop_column", "drop_rows", "duplicate", "bytes", "truncate"]),
       row=st.integers(0, 11), col=st.integers(0, 20), value=CELLS, frac=st.floats(0, 1), blob=st.binary(max_size=80))
@FUZZ
def test_validate_of_a_broken_manifest_is_one_line(stemset_dir, capsys, kind, row, col, value, frac, blob):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(stemset_dir, Path(tmp) / "set"))
        path = root / "manifest.parquet"
        df = pd.read_parquet(path)
        column = df.columns[col % len(df.columns)]
        if kind == "cell":
            df[column] = df[column].astype(object)
            df.loc[df.index[row % len(df)], column] = value
            try:
                df.to_parquet(path)
            except Exception:  # pyarrow refuses mixed columns: write them as text, the type the validator then sees
                df[column] = df[column].astype(str)
                df.to_parquet(path)
        elif kind == "drop_column":
            df.drop(columns=column).to_parquet(path)
        elif kind == "drop_rows":
            df.iloc[: int(frac * len(df))].to_parquet(path)
        elif kind == "duplicate":
            pd.concat([df, df.iloc[[row % len(df)]]]).to_parquet(path)
        elif kind == "bytes":
            path.write_bytes(blob)
        else:
            data = path.read_bytes()
            path.write_bytes(data[: int(frac * (len(data) - 1))])
        rc, err = run_cli(capsys, ["validate", str(root)])
        if rc:
            one_line_error(err, "validate")


# ------------------------------------------------------------------------------------------------- params
BLOCKS = {"data": P.DataParams, "contaminate": P.ContaminateParams, "catalogue": P.CatalogueParams,
          "embed": P.EmbedParams, "score": P.ScoreParams, "select": P.SelectParams, "filter": P.FilterParams,
          "train": P.TrainParams, "evaluate": P.EvaluateParams, "refine": P.RefineParams}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 12, 10 ** 12), st.floats(allow_nan=True),
                    st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=3), max_leaves=6)


@st.composite
def params_block(draw):
    name = draw(st.sampled_from(sorted(BLOCKS)))
    fields = [f.name for f in dataclasses.fields(BLOCKS[name])]
    if draw(st.integers(0, 9)) == 0:
        return name, draw(VALUES)  # the whole block replaced (a number, a list, ...)
    keys = draw(st.lists(st.sampled_from(fields) | st.text(min_size=1, max_size=8), min_size=1, max_size=3))
    return name, {k: draw(VALUES) for k in keys}


@given(block=params_block())
@settings(max_examples=50, deadline=None, derandomize=True)
def test_random_params_values_fail_in_one_line_naming_the_key(block):
    name, value = block
    params = {name: value, "_path": "params.yaml"}
    try:
        P.stage_params(params, name, BLOCKS[name])
    except P.ParamsError as e:  # the only failure allowed: one line naming the file and the block
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"params.yaml: {name}"), msg


@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@settings(max_examples=30, deadline=None, derandomize=True)
def test_a_garbage_params_file_fails_in_one_line(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            params = P.load_params(path)
            P.stage_params(params, "data", P.DataParams)
        except P.ParamsError as e:
            assert "\n" not in str(e) and str(path) in str(e)

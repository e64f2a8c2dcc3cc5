"""`stemsift export`: every format writes exactly the selection's stems, hard-linked, with a dataset card."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from stemsift import LABELS
from stemsift.cli import main
from stemsift.export import export, kept_stems
from stemsift.stages import filter as filter_stage
from stemsift.stemset import StemSet

from curation_world import build_world


@pytest.fixture(scope="module")
def filtered(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    params = build_world(root, n_train=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        plain = filter_stage.run(params)
        partial = sorted(plain[plain.keep].track_id.unique())[0]
        (root / "v.csv").write_text(f"track,stem,verdict\n{partial},bass,drop\n")  # a stem-level drop
        params["filter"]["verdicts"] = "v.csv"
        filter_stage.run(params)
    sel = pd.read_parquet(root / "data/filtered/selections.parquet")
    return root, params, sel, partial


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "README.md")


def test_msst_type1_song_folders(filtered, tmp_path):
    root, params, sel, partial = filtered
    kept = kept_stems(sel)
    complete = sorted({t for t, _ in kept if all((t, lb) in kept for lb in LABELS)})
    info = export(root / "data/filtered", "msst-type1", tmp_path / "out", params)
    out = tmp_path / "out"
    assert partial not in complete and len(complete) == 3
    assert sorted(p.name for p in (out / "train").iterdir()) == complete
    assert all(sorted(f.name for f in (out / "train" / t).iterdir()) == sorted(f"{lb}.flac" for lb in LABELS)
               for t in complete)
    ss = StemSet(root / "data/filtered")
    assert sorted(p.name for p in (out / "valid").iterdir()) == ss.track_ids("reference")
    assert all((out / "valid" / t / "mixture.flac").is_file() for t in ss.track_ids("reference"))
    assert sorted(p.name for p in (out / "test").iterdir()) == ss.track_ids("test")
    n = len(complete) * 4 + (len(ss.track_ids("reference")) + len(ss.track_ids("test"))) * 5
    assert len(_files(out)) == n and info["links"] == n and info["copies"] == 0
    f = out / "train" / complete[0] / "vocals.flac"
    assert os.path.samefile(f, ss.stem_path(complete[0], "vocals"))  # hard link
    card = (out / "README.md").read_text()
    for needle in ("msst-type1", "`random`", "0.5 (unified)", "v.csv (1 verdicts", "params hash", "git revision",
                   f"| train | {len(complete)} | {len(complete)} | {len(complete)} | {len(complete)} |", partial,
                   "inference.extension: flac"):
        assert needle in card, needle


def test_msst_type2_and_type3_list_every_kept_stem(filtered, tmp_path):
    root, params, sel, partial = filtered
    kept = kept_stems(sel)
    export(root / "data/filtered", "msst-type2", tmp_path / "t2", params)
    got = {(p.stem, p.parent.name) for p in (tmp_path / "t2/train").rglob("*.flac")}
    assert got == kept and (partial, "bass") not in got and (partial, "vocals") in got
    export(root / "data/filtered", "msst-type3", tmp_path / "t3", params)
    csv = pd.read_csv(tmp_path / "t3/train.csv")
    assert list(csv.columns) == ["instrum", "path"] and len(csv) == len(kept)
    assert {(os.path.basename(p).split(".")[0], i) for i, p in zip(csv.instrum, csv.path)} == kept
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in csv.path)
    assert all(p.startswith(str((tmp_path / "t3").resolve())) for p in csv.path)
    counts = csv.instrum.value_counts()
    assert f"| train | {counts['vocals']} | {counts['bass']} |" in (tmp_path / "t3/README.md").read_text()


def test_csv_format_and_cli(filtered, tmp_path, monkeypatch, capsys):
    root, params, sel, _ = filtered
    monkeypatch.chdir(root)
    import yaml

    (root / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k != "_path"}))
    assert main(["export", "--format", "csv", str(tmp_path / "c")]) == 0
    assert "training songs (csv" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "c/stems.csv")
    train = table[table.split == "train"]
    assert set(zip(train.track_id, train.label)) == kept_stems(sel)
    assert set(table.path) == set(_files(tmp_path / "c")) - {"stems.csv"} and len(table) == len(set(table.path))
    assert (table.label == "mixture").sum() == len(StemSet("data/filtered").track_ids("reference")) + 2
    # a second export replaces an earlier one; a foreign folder is refused in one line
    assert main(["export", "--format", "msst-type2", str(tmp_path / "c")]) == 0
    assert not (tmp_path / "c/stems.csv").exists() and (tmp_path / "c/train/vocals").is_dir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("x")
    assert main(["export", "--format", "csv", str(tmp_path / "mine")]) == 1
    assert "mine: exists and is not a stemsift export" in capsys.readouterr().err
    assert (tmp_path / "mine/notes.txt").is_file()

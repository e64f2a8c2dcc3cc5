"""Human verdicts (filter.verdicts): the filter stage obeys them over the scores and records them."""
from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest

from stemsift.catalogue import build_catalogue
from stemsift.clean.verdicts import VerdictError, read_verdicts
from stemsift.stages import filter as filter_stage

from curation_world import build_world


@pytest.fixture
def world(tmp_path, monkeypatch):
    params = build_world(tmp_path)
    monkeypatch.chdir(tmp_path)
    return params


def _kept_targets(sel: pd.DataFrame) -> set[tuple[str, str]]:
    k = sel[sel.keep & (sel.role == "target")]
    return set(zip(k.track_id, k.label))


def test_filter_obeys_verdicts_over_scores(world, tmp_path):
    plain = filter_stage.run(world)
    songs = plain[plain.keep].track_id.unique()
    dropped = sorted(set(plain.track_id) - set(songs))
    keep_song, drop_song = dropped[0], sorted(songs)[0]
    drop_stem_of = sorted(songs)[1]
    (tmp_path / "v.csv").write_text(f"track,stem,verdict\n{keep_song},song,keep\n{drop_song},song,drop\n"
                                    f"{drop_stem_of},drums,drop\n{drop_song},vocals,keep\n")
    sel = filter_stage.run({**world, "filter": {**world["filter"], "verdicts": "v.csv"}})
    kept = set(sel[sel.keep].track_id)
    assert keep_song in kept and keep_song not in set(songs)        # score said drop, human said keep
    assert _kept_targets(sel) >= {(keep_song, lb) for lb in ("vocals", "bass", "drums", "other")}
    # the dropped song keeps only its vocals stem (stem verdict wins over the song verdict)
    assert {lb for t, lb in _kept_targets(sel) if t == drop_song} == {"vocals"}
    assert not sel[(sel.track_id == drop_song) & (sel.label != "vocals")].keep.any()
    # a stem drop: the stem is neither a target nor an interferer of any model; the rest of its song stays
    assert not sel[(sel.track_id == drop_stem_of) & (sel.label == "drums")].keep.any()
    assert sel[(sel.track_id == drop_stem_of) & (sel.label != "drums")].keep.all()
    # every other song as the scores decided
    others = ~sel.track_id.isin([keep_song, drop_song, drop_stem_of])
    assert sel[others].keep.tolist() == plain.set_index(sel.columns[:4].tolist()).loc[
        pd.MultiIndex.from_frame(sel[others][sel.columns[:4]])].keep.tolist()
    m = json.loads((tmp_path / "metrics/filter.json").read_text())
    assert m["verdicts"] == {"file": "v.csv", "rows": 4, "song_keep": 1, "song_drop": 1, "stem_keep": 1,
                             "stem_drop": 1, "overrode": 3}  # vocals keep: the scores kept it too
    assert (tmp_path / "data/filtered/train" / keep_song / "vocals.flac").is_file()
    # the catalogue holds the verdicts with what the scores had decided
    db = build_catalogue(tmp_path / "c.duckdb", {"contaminated": "data/contaminated"},
                         {"verdicts": ["data/filtered/verdicts.parquet"]})
    rows = duckdb.connect(str(db), read_only=True).execute(
        "SELECT track_id, stem, verdict, score_decision, overrode FROM verdicts ORDER BY track_id, stem").fetchall()
    assert (keep_song, "song", "keep", "drop", True) in rows and len(rows) == 4


def test_no_verdicts_file_keeps_the_config_hash_and_writes_an_empty_table(world, tmp_path):
    a = filter_stage.run(world)
    b = filter_stage.run({**world, "filter": {**world["filter"], "verdicts": None}})
    assert a.equals(b)
    hashes = pd.read_parquet(tmp_path / "data/filtered/selections.parquet").config_hash.unique()
    import stemsift.params as P
    assert list(hashes) == [P.params_hash({"cleaner": "random", **world["filter"]})]
    assert len(pd.read_parquet(tmp_path / "data/filtered/verdicts.parquet")) == 0
    assert "verdicts" not in json.loads((tmp_path / "metrics/filter.json").read_text())


@pytest.mark.parametrize("body,fault", [
    ("track,stem,verdict\ntrain-00,song,keep\nnope-99,song,drop\n", "v.csv:3: unknown track 'nope-99'"),
    ("track,stem,verdict\ntest-00,song,drop\n", "v.csv:2: unknown track 'test-00'"),
    ("track,stem,verdict\ntrain-00,piano,drop\n", "v.csv:2: unknown stem 'piano'"),
    ("track,stem,verdict\ntrain-00,song,maybe\n", "v.csv:2: unknown verdict 'maybe'"),
    ("track,stem,verdict\ntrain-00,song,keep\ntrain-00,song,drop\n", "v.csv:3: train-00/song is drop here but keep on line 2"),
    ("track,verdict\ntrain-00,keep\n", "v.csv: missing column 'stem'"),
])
def test_bad_verdicts_fail_in_one_line_naming_the_file(tmp_path, body, fault):
    (tmp_path / "v.csv").write_text(body)
    with pytest.raises(VerdictError) as e:
        read_verdicts(tmp_path / "v.csv", {"train-00", "train-01"})
    assert str(e.value).startswith(str(tmp_path / fault.split(":")[0])) and fault.split(" ", 1)[1] in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_track_fails_the_stage_through_the_cli(world, tmp_path, capsys):
    import yaml

    from stemsift.cli import main

    (tmp_path / "v.csv").write_text("track,stem,verdict\nghost,song,drop\n")
    params = {k: v for k, v in world.items() if k != "_path"}
    params["filter"]["verdicts"] = "v.csv"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["filter"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "stemsift filter: error: v.csv:2: unknown track 'ghost' (not a training song of the stem set)"

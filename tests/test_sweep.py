"""`stemsift sweep` reads the experiments of `dvc exp show --json` (DVC 3 layout) into one row per config."""
from stemsift.sweep import collect


def _exp(name, cleaner, ratio, sdr, auc, seeds=(0,)):
    params = {"score": {"cleaner": cleaner}, "filter": {"ratio": ratio, "mode": "unified"}, "train": {"seeds": list(seeds)}}
    metrics = {"metrics/separation.json": {"data": {"cleaned": {"sdr_avg": sdr}, "baseline": {"sdr_avg": 2.0},
                                                     "gain_db": sdr - 2.0}},
               "metrics/filter.json": {"data": {"clean_share": 0.7}},
               "metrics/cleaning.json": {"data": {cleaner: {"song_auc": {"all": auc}, "stem_auc": {"all": auc}}}}}
    return {"name": name, "revs": [{"name": name, "rev": "abc", "error": None,
                                    "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}]}


def test_collect_reads_experiments_not_commits():
    commit_data = _exp("main", "fad", 0.75, 9.9, 0.9)["revs"][0]["data"]
    shown = [{"rev": "workspace", "name": None, "data": commit_data, "experiments": None},
             {"rev": "c0ffee", "name": "main", "data": commit_data,
              "experiments": [_exp("exp-a", "mlp", 0.5, 2.4, 0.84), _exp("exp-b", "random", 0.5, 2.1, 0.52),
                              {"name": "exp-failed", "revs": [{"name": "exp-failed", "error": {"msg": "x"}, "data": {}}]},
                              {**_exp("exp-running", "fad", 0.5, 2.2, 0.7), "executor": {"state": "running"}},
                              _exp("ev1a2b3c-mixed-fad-075", "fad", 0.75, 9.9, 0.7)]}]
    table = collect(shown)
    # commits, failures, unfinished runs and `make evidence` experiments (their separation.json is stale) left out
    assert list(table.experiment) == ["exp-a", "exp-b"]
    row = table.set_index("cleaner").loc["mlp"]
    assert row.ratio == 0.5 and row.sdr_cleaned == 2.4 and row.song_auc == 0.84 and abs(row.gain_db - 0.4) < 1e-9
    assert row.seeds == 1 and row.clean_share == 0.7


def test_detection_writes_every_cleaner_per_preset(tmp_path):
    """`stemsift detection` (after `make detect`): the newest finished experiment per contamination preset."""
    import json

    from stemsift.sweep import detection

    def exp(name, preset, auc):
        e = _exp(name, "fad", 0.75, 2.0, auc)
        e["revs"][0]["data"]["params"]["params.yaml"]["data"]["contaminate"] = {"preset": preset}
        return e

    shown = [{"rev": "c0ffee", "name": "main", "data": {},
              "experiments": [exp("detect-effects", "effects", 0.76), exp("old-effects", "effects", 0.5),
                              exp("detect-mixed25", "mixed25", 0.9)]}]
    found = detection(shown, tmp_path)
    assert set(found) == {"effects", "mixed25"} and found["effects"]["experiment"] == "detect-effects"
    saved = json.loads((tmp_path / "effects.json").read_text())
    assert saved["cleaners"]["fad"]["song_auc"]["all"] == 0.76 and saved["preset"] == "effects"
    try:
        detection([], tmp_path)
    except ValueError as e:
        assert "make detect" in str(e)
    else:
        raise AssertionError("no experiment must fail in one line")

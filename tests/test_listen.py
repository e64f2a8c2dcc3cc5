"""The listening report: built by the `listen` stage from the filter's outputs, then driven in headless Chromium
(Debian's `chromium` through playwright-core from npm; no network): it loads without console errors, audio
plays, sorting reorders, keyboard verdicts update the CSV download, and that CSV drives the filter."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from stemsift.stages import audit as audit_stage
from stemsift.stages import filter as filter_stage
from stemsift.stages import listen

from curation_world import DEFECTIVE, build_world

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "browser" / "listen_check.js"
SONGS = 5


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("listen")
    params = build_world(root, n_train=8, leak=True)
    params.update(audit={"stemset": "data/contaminated", "out": "data/audit"}, listen={"songs": SONGS, "excerpt_s": 1.5})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        filter_stage.run(params)
        audit_stage.run(params)
        info = listen.run(params)
    return root, params, info


def page_data(root: Path) -> dict:
    text = (root / "reports/listen/index.html").read_text()
    start = text.index('<script type="application/json" id="data">') + len('<script type="application/json" id="data">')
    return json.loads(text[start:text.index("</script>", start)])


def test_report_holds_the_worst_songs_with_decisions_truth_and_audit(report):
    root, params, info = report
    data = page_data(root)
    rows = data["cleaners"]["random"]["rows"]
    scores = pd.read_parquet(root / "data/scores/scores-random.parquet")
    worst = set(scores.groupby("track_id").song_score.first().nsmallest(SONGS).index)
    worst |= set(scores.nsmallest(SONGS, "score").track_id)  # the songs of the lowest-scored stems too
    assert {r["track"] for r in rows} == worst and len(rows) == 4 * len(worst)
    sel = pd.read_parquet(root / "data/filtered/selections.parquet")
    own = sel[(sel.role == "target") & (sel.target == sel.label)].set_index(["track_id", "label"]).keep
    assert all(r["decision"] == ("keep" if own[(r["track"], r["label"])] else "drop") for r in rows)
    assert [r["rank"] for r in sorted(rows, key=lambda r: r["score"])] == sorted(r["rank"] for r in rows)
    truth = {(r["track"], r["label"]): r["truth"] for r in rows}
    if DEFECTIVE in set(worst):
        assert truth[(DEFECTIVE, "vocals")] == "label_noise (swap)"
    assert {v for k, v in truth.items() if k[0] != DEFECTIVE} == {"clean"}
    assert data["audit"] == ["duplicate song of test/test-copy (LEAK)", "duplicate song of train/train-00 (LEAK)"]
    flagged = [r["audit"] for r in rows if r["track"] == "train-00"]
    assert all(f == ["duplicate song of test/test-copy (LEAK)"] for f in flagged)
    c = data["cleaners"]["random"]
    assert c["kept"] == 4 and c["songs"] == 8 and c["cut"] is not None
    assets = root / "reports/listen/assets"
    assert len(list(assets.glob("*.ogg"))) == 5 * len(worst) and len(list(assets.glob("*.png"))) == 4 * len(worst) + 1
    assert info["bytes"] < 1_500_000


def _browser() -> tuple[str, str]:
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("Debian's chromium is not installed (make setup installs it with apt-get)")
    node = shutil.which("node")
    assert node, "node is missing: make setup installs nodejs and npm with apt-get"
    assert (REPO / "node_modules" / "playwright-core").is_dir(), \
        "node_modules/playwright-core is missing: run `make setup` (npm install in the repository root)"
    return exe, node


def test_report_in_headless_chromium_and_its_csv_drives_the_filter(report, tmp_path, monkeypatch):
    exe, node = _browser()
    root, params, _ = report
    shot, csv = tmp_path / "listen.png", tmp_path / "verdicts.csv"
    run = subprocess.run([node, str(DRIVER), str(root / "reports/listen/index.html"), str(shot), exe, str(csv)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "exception" not in out, out.get("exception")
    assert out["errors"] == [] and out["external"] == []                      # no console errors, no network
    assert out["rows"] == len(page_data(root)["cleaners"]["random"]["rows"]) and all(out["images"])                     # table, histogram, spectrograms
    a = out["audio"]
    assert a["error"] is None and not a["paused"] and a["t1"] > a["t0"] + 0.3, a  # an audio element plays
    assert out["scoreAsc"] == sorted(out["scoreAsc"]) and out["scoreDesc"] == sorted(out["scoreAsc"], reverse=True)
    assert out["rowsAsc"] != [None] and out["scoreDesc"] != out["scoreAsc"]   # sorting changed the order
    assert out["songRank"] == sorted(out["songRank"])
    (t1, l1), (t2, _) = out["marked"]
    assert out["csv0"] == "track,stem,verdict\n"
    assert out["csv1"] == f"track,stem,verdict\n{t1},{l1},drop\n" and out["verdictCell"] == "drop"
    assert f"{t2},song,keep" in out["csv2"] and out["download"] == out["csv2"]
    assert out["downloadName"] == "verdicts.csv" and set(out["filtered"]) == {t1}
    assert shot.is_file() and shot.stat().st_size > 10_000
    # the downloaded verdicts drive the filter
    monkeypatch.chdir(root)
    sel = filter_stage.run({**params, "filter": {**params["filter"], "verdicts": str(csv)}})
    assert not sel[(sel.track_id == t1) & (sel.label == l1)].keep.any()
    assert sel[(sel.track_id == t2) & (sel.target == sel.label) & (sel.role == "target")].keep.all()

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


# ----------------------------------------------------------------------------- 1,000 songs
SCALE_DRIVER = REPO / "tests" / "browser" / "listen_scale.js"
SCALE_SONGS = 1000


def scale_report(folder: Path) -> dict:
    """A report of 1,000 songs (4,000 rows) built from generated tables; every row's assets are links to one tiny
    excerpt and one spectrogram (the page, not the audio, is what scales)."""
    import numpy as np

    from stemsift import LABELS
    from stemsift.report.listen import page_html, report_data, save_histogram, save_spectrogram, write_excerpt

    rng = np.random.default_rng(0)
    tracks = [f"train-{i:04d}" for i in range(SCALE_SONGS)]
    sc = pd.DataFrame([(t, lb) for t in tracks for lb in LABELS], columns=["track_id", "label"])
    sc["score"] = rng.normal(size=len(sc))
    sc["song_score"] = sc.groupby("track_id").score.transform("mean")
    defect = {t: ("label_noise" if i % 4 == 1 else "bleeding" if i % 4 == 2 else "clean") for i, t in enumerate(tracks)}
    truth = pd.DataFrame({"track_id": sc.track_id, "label": sc.label, "defect": sc.track_id.map(defect),
                          "kind": "", "true_instruments": [[lb] for lb in sc.label]})
    data, shown, kept = report_data({"blind": sc}, "generated-1000", ratio=0.5, truth=truth, songs=SCALE_SONGS)
    assets = folder / "assets"
    assets.mkdir(parents=True)
    sr = 16000
    write_excerpt(rng.normal(scale=0.1, size=(sr, 1)), sr, assets / "one.ogg")
    save_spectrogram(rng.normal(scale=0.1, size=(sr, 1)), sr, assets / "one.png")
    save_histogram(sc.groupby("track_id").song_score.first(), data["cleaners"]["blind"]["cut"], kept["blind"],
                   assets / "hist-blind.png", "blind")
    for t in shown:
        for lb in LABELS:
            os.link(assets / "one.png", assets / f"{t}-{lb}.png")
        for lb in (*LABELS, "mixture"):
            os.link(assets / "one.ogg", assets / f"{t}-{lb}.ogg")
    (folder / "index.html").write_text(page_html(data))
    return data


def test_a_report_of_1000_songs_answers_within_3_s_and_works_across_pages(tmp_path):
    exe, node = _browser()
    data = scale_report(tmp_path)
    rows = data["cleaners"]["blind"]["rows"]
    assert len(rows) == 4 * SCALE_SONGS
    run = subprocess.run([node, str(SCALE_DRIVER), str(tmp_path / "index.html"), exe], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "exception" not in out, out.get("exception")
    assert out["errors"] == [] and out["external"] == []
    scores = sorted(r["score"] for r in rows)
    # interactive: from navigation to a sorted table (and to a filtered one) within 3 s
    assert out["sortMs"] < 3000 and out["filterMs"] < 3000, out
    assert out["topDesc"] == pytest.approx(scores[-1], rel=1e-3)
    assert set(out["filterRows"]) == {"train-0777"} and len(out["filterRows"]) == 4
    # one page of rows in the DOM, no players until one is played, images lazy (not all fetched at once)
    assert out["domRows"] == 200 and out["players"] == 0 and out["images"] == ["lazy"]
    assert 1 <= out["imagesLoaded"] < out["domRows"], out["imagesLoaded"]
    assert out["playersAfterPlay"] == 1
    # sorting spans every page
    assert out["firstAsc"] == pytest.approx(scores[0], rel=1e-3) and out["lastAsc"] == pytest.approx(scores[-1], rel=1e-3)
    assert out["pageInfo1"] == "rows 1\u2013200 of 4000 \u00b7 page 1 of 20" and out["pagesClicked"] == 19
    assert out["pageInfoLast"] == "rows 3801\u20134000 of 4000 \u00b7 page 20 of 20"
    # the keyboard crosses pages; verdicts from two pages are all in the CSV and survive paging
    assert (out["focusBefore"], out["focusAfter"]) == (199, 200) and "page 2 of 20" in out["pageInfoAfterJ"]
    (t1, l1), (t2, _) = out["marked"]
    assert out["csv"] == "track,stem,verdict\n" + "\n".join(sorted([f"{t1},{l1},drop", f"{t2},song,keep"])) + "\n"
    assert out["verdictBack"] == "drop"
    assert sorted(out["verdictSorted"][:5]) == ["drop", "keep", "keep", "keep", "keep"] and out["verdictSorted"][5] == ""
    # a filter counts the rows of every page
    drops = sum(r["decision"] == "drop" for r in rows)
    assert out["dropInfo"].endswith(f"of {drops} \u00b7 page 1 of {-(-drops // 200)}"), out["dropInfo"]

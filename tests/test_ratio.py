"""The automatic keep ratio: mixture methods recover the mixing proportion; degenerate inputs keep everything."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stemsift import LABELS
from stemsift.clean.ratio import auto_keep, gmm_posterior, normalise
from stemsift.clean.select import keep_top


def two_populations(n: int, clean: float, seed: int = 0, family: str = "gauss") -> pd.Series:
    """Song scores (higher = keep), clean songs first: N(0, 1) vs N(-5, 1.3), or Beta(10, 2) vs Beta(2, 6)."""
    rng = np.random.default_rng(seed)
    k = int(round(clean * n))
    if family == "gauss":
        x = np.concatenate([rng.normal(0, 1, k), rng.normal(-5, 1.3, n - k)])
    else:
        x = np.concatenate([rng.beta(10, 2, k), rng.beta(2, 6, n - k)])
    return pd.Series(x, index=[f"s{i:03d}" for i in range(n)])


@pytest.mark.parametrize("method", ["gmm", "beta"])
@pytest.mark.parametrize("clean", [0.25, 0.5, 0.75])
def test_mixture_methods_recover_the_mixing_proportion(method, clean):
    """Each method on a sample of its own model family (Gaussian / beta populations)."""
    songs = two_populations(400, clean, seed=int(clean * 100), family="gauss" if method == "gmm" else "beta")
    a = auto_keep(songs, method)
    assert not a.warning
    assert abs(a.clean_share - clean) <= 0.05, a
    assert abs(a.ratio - clean) <= 0.05, a
    kept_clean = sum(int(t[1:]) < round(clean * 400) for t in a.keep) / len(a.keep)
    assert kept_clean > 0.95  # the kept songs are the clean population


@pytest.mark.parametrize("method", ["gmm", "beta"])
def test_degenerate_inputs_warn_and_keep_everything(method):
    few = two_populations(8, 0.5)
    equal = pd.Series(1.0, index=[f"s{i}" for i in range(50)])
    unimodal = pd.Series(np.random.default_rng(1).normal(size=200), index=[f"s{i}" for i in range(200)])
    for songs, why in [(few, "too few"), (equal, "equal"), (unimodal, "unimodal")]:
        a = auto_keep(songs, method)
        assert a.ratio == 1.0 and a.keep == frozenset(songs.index) and why in a.warning, (why, a)


def test_cleanlab_counts_label_issues_from_class_probabilities():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        for k, lb in enumerate(LABELS):
            p = np.full(4, 0.02)
            true = (k + 1) % 4 if i < 10 and lb in ("vocals", "bass") else k  # 10 songs with 2 mislabelled stems
            p[true] = 0.94
            p = np.abs(p + rng.normal(0, 0.01, 4))
            rows.append({"track_id": f"s{i:02d}", "label": lb, **{f"p_{c}": p[j] for j, c in enumerate(LABELS)}})
    stems = pd.DataFrame(rows)
    q = stems.apply(lambda r: r[f"p_{r.label}"], axis=1)
    songs = q.groupby(stems.track_id).mean()  # the song score the filter ranks by: mean stem quality
    a = auto_keep(songs, "cleanlab", stems=stems)
    assert abs(a.ratio - 0.75) <= 0.05 and frozenset(f"s{i:02d}" for i in range(10, 40)) <= a.keep, a
    assert a.keep == frozenset(keep_top(songs.rename_axis("track_id"), a.ratio))  # the filter's own ranking
    # the same two-population test as gmm / beta: nearly equal song scores keep everything, whatever cleanlab counts
    flat = pd.Series(1.0, index=songs.index) + np.linspace(0, 1e-3, 40)
    b = auto_keep(flat, "cleanlab", stems=stems)
    assert b.ratio == 1.0 and b.warning, b
    with pytest.raises(ValueError, match="cleanlab needs"):
        auto_keep(songs, "cleanlab")
    with pytest.raises(ValueError, match="filter.auto.method"):
        auto_keep(songs, "vote")


def test_filter_stage_with_ratio_auto_through_the_cli(tmp_path, monkeypatch, capsys):
    """`stemsift filter` with filter.ratio: auto keeps the high-scoring population and records r, the estimated
    clean share and the method in metrics/filter.json; too few songs warn and keep all."""
    import json

    import yaml

    from stemsift.cli import main
    from curation_world import build_world

    params = build_world(tmp_path, n_train=16, n_ref=1, n_test=1, seconds=0.5)
    monkeypatch.chdir(tmp_path)
    scores = pd.read_parquet("data/scores/scores-random.parquet")
    bad = {f"train-{i:02d}" for i in range(4)}  # a second, low-scoring population of 4 songs in 16
    rng = np.random.default_rng(0)
    song = {t: (rng.normal(-6, 0.5) if t in bad else rng.normal(0, 0.5)) for t in scores.track_id.unique()}
    scores["song_score"] = scores.track_id.map(song)
    scores["score"] = scores.song_score
    scores.to_parquet("data/scores/scores-random.parquet", index=False)
    params["filter"] = {**params["filter"], "ratio": "auto", "auto": {"method": "gmm"}}
    Path("params.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k != "_path"}))
    assert main(["filter"]) in (0, None)
    m = json.loads(Path("metrics/filter.json").read_text())
    sel = pd.read_parquet("data/filtered/selections.parquet")
    kept = set(sel[sel.keep].track_id)
    # the ratio reported is the ratio applied: the materialised selection keeps that share, the 12 good songs
    assert m["ratio_auto"] == len(kept) / 16 == 0.75 and kept == set(song) - bad, (m, sorted(kept))
    assert m["auto_method"] == "gmm" and m["cleaned_songs"] == 12 and abs(m["clean_share_estimated"] - 0.75) < 0.05
    assert max(song[t] for t in bad) < m["auto_cut"] < min(song[t] for t in kept)
    params["filter"]["auto"]["method"] = "storey"  # random writes no song p-values: the cut decides, with a note
    Path("params.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k != "_path"}))
    capsys.readouterr()
    assert main(["filter"]) in (0, None)
    assert "the two-population cut (gmm) decides" in capsys.readouterr().out
    m = json.loads(Path("metrics/filter.json").read_text())
    assert m["auto_method"] == "gmm" and m["ratio_auto"] == 0.75
    params["filter"]["auto"]["method"] = "gmm"
    params["filter"]["auto"]["min_songs"] = 20  # 16 songs: too few -> warning, keep all
    Path("params.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k != "_path"}))
    main(["filter"])
    assert "too few" in capsys.readouterr().out
    assert json.loads(Path("metrics/filter.json").read_text())["cleaned_songs"] == 16
    params["filter"]["ratio"] = "most"
    Path("params.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k != "_path"}))
    assert main(["filter"]) != 0
    assert "params.yaml: filter.ratio: must be in (0, 1] or auto" in capsys.readouterr().err


def unequal(clean: tuple[float, float, int], bad: tuple[float, float, int], seed: int) -> tuple[pd.Series, set[str]]:
    """Song scores N(mean, sd) x n of a clean and a defective population (clean songs first) and the clean ids."""
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(*clean), rng.normal(*bad)]
    ids = pd.Index([f"s{i:03d}" for i in range(len(x))], name="track_id")
    return pd.Series(x, index=ids), set(ids[:clean[2]])


def posterior_rule(songs: pd.Series) -> set[str]:
    """The former rule: count the songs whose clean posterior is > 0.5, then keep that many top songs (the filter)."""
    r = float((gmm_posterior(normalise(songs.to_numpy()))[0] > 0.5).mean())
    return keep_top(songs, r)


@pytest.mark.parametrize("method", ["gmm", "beta"])
def test_a_wide_clean_and_a_tight_defective_population_keep_no_defective_song(method):
    """Clean N(0, 3), defective N(-6, 0.2): the wide clean component dominates again far below the defective one,
    so a posterior count is inflated by the low clean songs and the top-r filter then reaches into the defective
    population. The cut between the means keeps none of it."""
    songs, clean = unequal((0, 3, 300), (-6, 0.2, 100), seed=0)
    a = auto_keep(songs, method)
    assert not a.warning and a.keep <= clean and abs(a.ratio - 0.75) < 0.05, (a.ratio, len(a.keep - clean))
    assert a.keep == set(songs[songs > a.cut].index)  # a cut on the sorted scores: everything above it, nothing below
    assert len(posterior_rule(songs) - clean) >= 3  # the case is one where posterior counting misjudges r


def test_a_tight_clean_and_a_wide_defective_population_keep_every_clean_song():
    """Clean N(0, 0.25), defective N(-5, 3): the wide defective component dominates again above the clean cluster,
    so a posterior count misses top songs and the top-r filter then drops clean songs at the cluster's bottom."""
    songs, clean = unequal((0, 0.25, 250), (-5, 3, 150), seed=3)
    a = auto_keep(songs, "gmm")
    assert not a.warning and clean <= a.keep and abs(a.ratio - 0.625) < 0.05, (a.ratio, len(clean - a.keep))
    assert a.keep == set(songs[songs > a.cut].index)
    assert len(clean - posterior_rule(songs)) >= 2  # the former rule drops clean songs here


@pytest.mark.parametrize("method", ["gmm", "beta"])
def test_one_far_outlier_is_not_a_second_population(method):
    """Unimodal scores and one far high outlier: it forms its own tight component, passes BIC and Ashman's D,
    and would give r = 1/N; the minimum component weight keeps every song instead."""
    rng = np.random.default_rng(1)
    songs = pd.Series(np.r_[rng.normal(size=199), 30.0], index=[f"s{i:03d}" for i in range(200)])
    a = auto_keep(songs, method)
    assert a.ratio == 1.0 and a.keep == frozenset(songs.index) and "min_weight" in a.warning, a
    assert auto_keep(songs, method, min_weight=0.0).ratio == 1 / 200  # without it: the outlier alone is "clean"


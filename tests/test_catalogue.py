import pandas as pd
import pytest

from stemsift import LABELS
from stemsift.catalogue import EXAMPLE_QUERIES, SCHEMA, build_catalogue, query
from stemsift.params import ContaminateParams
from stemsift.stages.contaminate import contaminate_stemset
from stemsift.stemset import StemSetWriter

from conftest import make_stems

SR = 8000


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cat")
    w = StemSetWriter(tmp / "raw", SR, 2, source="synthetic")
    for i in range(10):
        split = "train" if i < 8 else ("reference" if i == 8 else "test")
        w.add_track(f"{split}-{i:03d}", split, make_stems(i, 1.0, SR))
    raw = w.close()
    truth = contaminate_stemset(raw, tmp / "contaminated", ContaminateParams(preset="mixed", seed=1))
    scores = pd.DataFrame({"cleaner": "random", "config_hash": "abc", "track_id": raw.stems.track_id,
                           "label": raw.stems.label, "score": range(len(raw.stems)), "song_score": 0.0})
    scores.to_parquet(tmp / "scores-random.parquet")
    db = build_catalogue(tmp / "catalogue.duckdb", {"raw": tmp / "raw", "contaminated": tmp / "contaminated"},
                         {"scores": [tmp / "scores-random.parquet"]})
    return db, truth


def test_every_table_exists_even_when_empty(catalogue):
    db, _ = catalogue
    tables = set(query(db, "SELECT table_name FROM information_schema.tables").table_name)
    assert set(SCHEMA) <= tables
    assert query(db, "SELECT count(*) AS n FROM runs").n[0] == 0


def test_defect_counts_match_the_mixed_preset(catalogue):
    db, truth = catalogue
    per_defect = query(db, EXAMPLE_QUERIES["songs and stems per defect"]).set_index("defect").songs.to_dict()
    assert per_defect == {"clean": 4, "label_noise": 2, "bleeding": 2}  # 8 train songs: 1/2, 1/4, 1/4
    stems = query(db, EXAMPLE_QUERIES["stems per label and split"])
    assert stems.groupby("split").stems.sum().to_dict() == {"reference": 4, "test": 4, "train": 32}
    assert set(stems.label) == set(LABELS)


def test_mislabelled_query_agrees_with_truth(catalogue):
    db, truth = catalogue
    wrong = query(db, EXAMPLE_QUERIES["stems whose content is not their label"])
    expected = truth[[list(t) != [lb] for t, lb in zip(truth.true_instruments, truth.label)]]
    assert len(wrong) == len(expected) > 0
    assert set(wrong.defect) <= {"label_noise", "bleeding"}


def test_labels_table_has_given_and_true(catalogue):
    db, _ = catalogue
    kinds = query(db, "SELECT stemset, kind, count(*) AS n FROM labels GROUP BY ALL ORDER BY ALL")
    got = {(r.stemset, r.kind): r.n for r in kinds.itertuples()}
    assert got == {("contaminated", "given"): 40, ("contaminated", "true"): 32, ("raw", "given"): 40, ("raw", "true"): 40}


def test_worst_scored_stems_query(catalogue):
    db, _ = catalogue
    worst = query(db, EXAMPLE_QUERIES["worst-scored stems per cleaner"])
    assert len(worst) == 10 and list(worst.score) == sorted(worst.score) and worst.score.iloc[0] == 0

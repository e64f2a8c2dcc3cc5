"""Reuse is keyed on the code a result depends on: editing any stemsift module a stage imports (inference,
resampling, selection rules, ...) invalidates its memoised results; editing a module it does not import does not."""
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from stemsift import LABELS, memo
from stemsift.separate import model as sepmodel
from stemsift.separate.scoring import score_model
from stemsift.stemset import StemSetWriter

from conftest import make_stems

PACKAGE = Path(memo.__file__).parent
SR = 8000
TINY = sepmodel.ModelConfig(sample_rate=SR, n_fft=256, n_hop=64, hidden_size=8, nb_layers=1, bandwidth=4000,
                              nb_channels=1)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the stemsift package that a test may edit."""
    return Path(shutil.copytree(PACKAGE, tmp_path / "stemsift", ignore=shutil.ignore_patterns("__pycache__")))


def edit(path: Path, old: str, new: str) -> None:
    s = path.read_text()
    assert s.count(old) == 1, f"{path}: {old!r} not found once (the test's anchor moved)"
    path.write_text(s.replace(old, new))


def keys(tree: Path) -> dict[str, str]:
    return {st: memo.code_key(f"stemsift.stages.{st}", root=tree) for st in ("train", "evaluate")}


def test_copied_tree_hashes_like_the_package(tree):
    assert keys(tree) == keys(PACKAGE)
    closure = memo.code_closure("stemsift.stages.evaluate", root=tree)
    # what evaluation runs: inference (separate_track), resampling, the model, museval glue, MixIT scoring
    assert {"stemsift.separate.train", "stemsift.audio", "stemsift.separate.model", "stemsift.separate.evaluate",
            "stemsift.separate.mixit_eval", "stemsift.stemset", "stemsift"} <= set(closure)
    assert not any(m.startswith("stemsift.data.") for m in closure)  # synthesis is not evaluation code


@pytest.mark.parametrize("path, old, new, changed", [
    # inference code: the Separator's output scaled -> every SDR changes -> evaluate must recompute
    ("separate/train.py", "est = sep(x)[0].cpu().numpy()", "est = 0.5 * sep(x)[0].cpu().numpy()", {"train", "evaluate"}),
    ("audio.py", "def resample(", "def _unused():\n    return 0\n\n\ndef resample(", {"train", "evaluate"}),
    ("separate/selection.py", "def summary(", "def _unused():\n    return 0\n\n\ndef summary(", {"train", "evaluate"}),
    ("separate/evaluate.py", "def summarize(", "def _unused():\n    return 0\n\n\ndef summarize(", {"evaluate"}),
    ("separate/mixit_train.py", "def train_mixit(", "def _unused():\n    return 0\n\n\ndef train_mixit(", {"train"}),
    ("data/synth.py", "def render_song(", "def _unused():\n    return 0\n\n\ndef render_song(", set()),
])
def test_editing_code_invalidates_exactly_the_results_that_import_it(tree, path, old, new, changed):
    before = keys(tree)
    edit(tree / path, old, new)
    after = keys(tree)
    assert {st for st in before if before[st] != after[st]} == changed


@pytest.fixture
def tiny_world(tmp_path):
    """A one-test-song stem set and an untrained tiny separator saved the way the train stage saves one."""
    w = StemSetWriter(tmp_path / "set", SR, 1, source="test")
    w.add_track("test-0", "test", make_stems(0, 1.0, SR, channels=1))
    ss = w.close()
    torch.manual_seed(0)
    sepmodel.save({t: sepmodel.build(TINY) for t in LABELS}, TINY, tmp_path / "model", {"seed": 0})
    return ss, tmp_path / "model"


def test_evaluate_recomputes_after_an_inference_edit_and_reuses_otherwise(tiny_world, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("STEMSIFT_CACHE", str(tmp_path / "cache"))
    ss, model = tiny_world
    entries = lambda: sorted(p.name for p in (tmp_path / "cache" / "evaluate").iterdir())  # noqa: E731
    code = memo.code_key("stemsift.stages.evaluate", root=tree)
    first = score_model(ss, model, 1, 1, torch.device("cpu"), code)
    assert len(entries()) == 1
    again = score_model(ss, model, 1, 1, torch.device("cpu"), memo.code_key("stemsift.stages.evaluate", root=tree))
    pd.testing.assert_frame_equal(first, again)
    assert len(entries()) == 1                                   # same code: reused
    edit(tree / "separate/train.py", "est = sep(x)[0].cpu().numpy()", "est = 0.5 * sep(x)[0].cpu().numpy()")
    score_model(ss, model, 1, 1, torch.device("cpu"), memo.code_key("stemsift.stages.evaluate", root=tree))
    assert len(entries()) == 2                                   # edited inference code: recomputed, new entry

"""The GPU path: every torch code path (separator training and inference, evaluation, unlearning, the refine
classifier, MixIT, embedders) runs on the device its params name. Marked `cuda`: skipped, with the reason in the
summary, where torch sees no CUDA device. STEMSIFT_TEST_DEVICE=cpu runs the same tests on the CPU (to check
the tests themselves on a machine without a GPU)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from stemsift import LABELS
from stemsift.classify import model as clsmodel
from stemsift.classify.model import ClassifierConfig, InstrumentClassifier, probability_fn
from stemsift.classify.train import ClassifierTrainConfig, predict_signals, train_classifier
from stemsift.clean.unlearning import UnlearningConfig, attribution
from stemsift.embed import get_embedder
from stemsift.separate import model as sepmodel
from stemsift.separate.data import StemPool, fixed_segments
from stemsift.separate.mixit import MixITConfig
from stemsift.separate.mixit_eval import separate_outputs
from stemsift.separate.mixit_train import train_mixit
from stemsift.separate.scoring import score_model
from stemsift.separate.selection import given_selection
from stemsift.separate.train import TrainConfig, separate_track, train_separator
from stemsift.stemset import StemSetWriter

from conftest import make_stems

DEVICE = torch.device(os.environ.get("STEMSIFT_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.cuda
SR = 8000
TINY = sepmodel.ModelConfig(sample_rate=SR, n_fft=256, n_hop=64, hidden_size=16, nb_layers=1, bandwidth=4000,
                            nb_channels=1)
PSI = ClassifierConfig(sample_rate=SR, n_fft=256, hop=128, n_mels=32, seg_dur=1.0, depths=(1, 1, 1, 1),
                       dims=(8, 16, 32, 64))
SHORT = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, seq_dur=0.5, stats_batches=1)


def on_device(module: torch.nn.Module) -> bool:
    return all(p.device.type == DEVICE.type for p in module.parameters())


@pytest.fixture(scope="module")
def stemset(tmp_path_factory):
    w = StemSetWriter(tmp_path_factory.mktemp("set"), SR, 1, source="test")
    for i, split in enumerate(["train"] * 4 + ["reference"] * 2 + ["test"]):
        w.add_track(f"{split}-{i}", split, make_stems(i, 1.5, SR, channels=1))
    return w.close()


@pytest.fixture(scope="module")
def trained(stemset, tmp_path_factory):
    """A few separator steps on the device, saved the way the train stage saves them."""
    train = stemset.track_ids("train")
    valid = fixed_segments(stemset, stemset.track_ids("reference"), SR, int(0.5 * SR), 1, 1)
    res = train_separator(StemPool(stemset, train, SR, 1), given_selection(stemset.stems, train), valid, TINY, SHORT,
                          0, DEVICE)
    folder = tmp_path_factory.mktemp("model") / "seed0"
    sepmodel.save(res.models, TINY, folder, {"seed": 0})
    return res, folder


def test_separator_trains_and_separates_on_the_device(trained, stemset):
    res, folder = trained
    assert all(on_device(m) for m in res.models.values()) and np.isfinite(res.history[-1]["train_loss"])
    models, cfg, _ = sepmodel.load(folder, str(DEVICE))
    sep = sepmodel.separator(models, cfg).to(DEVICE)
    est = separate_track(sep, stemset.load(stemset.track_ids("test")[0], "mixture"), DEVICE)
    assert set(est) == set(LABELS) and all(np.isfinite(x).all() and x.shape == (int(1.5 * SR), 1) for x in est.values())


def test_evaluation_on_the_device(trained, stemset, tmp_path, monkeypatch):
    monkeypatch.setenv("STEMSIFT_CACHE", str(tmp_path / "cache"))
    df = score_model(stemset, trained[1], 1, 1, DEVICE, code="test")
    assert len(df) == len(LABELS) and np.isfinite(df.sdr_utt).all()


@pytest.mark.parametrize("mode", ["first_order", "exact"])
def test_unlearning_on_the_device_matches_the_cpu(trained, stemset, mode):
    models = {t: m.cpu() for t, m in trained[0].models.items()}
    songs = {tid: stemset.load_track(tid) for tid in stemset.track_ids("train")}
    ref = {tid: stemset.load_track(tid) for tid in stemset.track_ids("reference")}
    cfg = UnlearningConfig(mode=mode, lr=1e-5, segments=1, seq_dur=0.5)
    here = attribution(models, TINY, songs, ref, cfg, DEVICE)  # cuDNN's LSTM has no eval-mode backward: handled
    cpu = attribution(models, TINY, songs, ref, cfg, "cpu")
    assert np.isfinite(here.delta).all() and here.delta.shape == (4, 2, 4)
    assert np.corrcoef(here.delta.ravel(), cpu.delta.ravel())[0, 1] > 0.99


def test_refine_classifier_trains_and_predicts_on_the_device(stemset):
    train = stemset.track_ids("train")
    stems = stemset.stems[stemset.stems.track_id.isin(train)]
    labels = {(t, lb): frozenset({lb}) for t, lb in zip(stems.track_id, stems.label)}
    res = train_classifier(StemPool(stemset, train, SR, 1), labels, PSI, ClassifierTrainConfig(steps=3, batch_size=4),
                           seed=0, device=DEVICE)
    assert on_device(res.model) and all(np.isfinite(res.losses))
    probs = predict_signals(res.model, [np.zeros(SR, np.float32), np.ones(2 * SR, np.float32) * 0.1], device=DEVICE)
    assert probs.shape == (2, 4) and ((probs >= 0) & (probs <= 1)).all()


def test_mixit_with_the_semantic_loss_trains_and_separates_on_the_device(stemset, tmp_path):
    torch.manual_seed(0)
    clsmodel.save(InstrumentClassifier(PSI).eval(), tmp_path / "psi")
    psi = probability_fn(clsmodel.load(tmp_path / "psi", str(DEVICE)), SR)  # as the train stage loads Ψ
    train = stemset.track_ids("train")
    valid = fixed_segments(stemset, stemset.track_ids("reference"), SR, int(0.5 * SR), 1, 1)[LABELS[0]][0]
    res = train_mixit(StemPool(stemset, train, SR, 1), train, valid, TINY, SHORT,
                      MixITConfig(num_outputs=2, semantic_weight=0.1), 0, DEVICE, classifier=psi)
    assert on_device(res.model) and np.isfinite(res.history[-1]["semantic"])
    out = separate_outputs(res.model, stemset.load(stemset.track_ids("test")[0], "mixture"), DEVICE)
    assert out.shape == (2, int(1.5 * SR), 1) and np.isfinite(out).all()


@pytest.mark.parametrize("name, options", [("mel", {}), ("crepe", {"model": "tiny"})])
def test_embedders_on_the_device(name, options):
    emb = get_embedder(name, options, device=str(DEVICE))
    x = make_stems(0, 1.0, 16000, channels=1)["vocals"][:, 0]
    frames = emb.embed(x, 16000)
    assert frames.ndim == 2 and len(frames) > 0 and np.isfinite(frames).all()

"""The `unlearning` cleaner (attribution by unlearning, exact and first-order) on tiny Open-Unmix models."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

import stemsift.clean.unlearning  # noqa: F401  (registers the cleaner; clean/__init__ may not import it yet)
from stemsift import LABELS
from stemsift.clean import CleanerError, StemView, get_cleaner
from stemsift.clean.unlearning import (UnlearningConfig, attribution, baseline_folder, deflate, fisher_diagonal,
                                       song_segments)
from stemsift.separate.model import ModelConfig, build, save, spectrogram
from stemsift.stemset import StemSetWriter

from conftest import make_stems

SR = 8000
TINY = ModelConfig(sample_rate=SR, n_fft=256, n_hop=64, hidden_size=16, nb_layers=1, nb_channels=1)
SEG = dict(segments=2, seq_dur=0.5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and spin on a busy machine)
    yield
    torch.set_num_threads(n)


def song(seed: int, seconds: float = 1.5) -> dict[str, np.ndarray]:
    """A mono song whose stems vary in level and band edges from song to song (distinct gradients)."""
    rng = np.random.default_rng(1000 + seed)
    stems = make_stems(seed, seconds, SR, 1)
    return {lb: (x * rng.uniform(0.3, 1.5)).astype(np.float32) for lb, x in stems.items()}


def tiny_models(songs: dict, steps: int, seed: int = 0) -> dict:
    """The four tiny target models, input statistics from the songs, `steps` Adam steps on their segments."""
    torch.manual_seed(seed)
    spec = spectrogram(TINY)
    segs = [song_segments(s, UnlearningConfig(**SEG), SR) for s in songs.values()]
    mix = torch.cat([m for m, _ in segs])
    frames = spec(mix).mean(1).permute(0, 2, 1).reshape(-1, TINY.nb_bins).double()
    mean, scale = frames.mean(0).numpy(), np.maximum(frames.std(0).numpy(), 1e-4)
    models = {}
    for t in LABELS:
        m = build(TINY, mean, scale)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        target = torch.cat([y[t] for _, y in segs])
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(m(spec(mix)), spec(target))
            opt.zero_grad()
            loss.backward()
            opt.step()
        models[t] = m.eval()
    return models


@pytest.fixture(scope="module")
def world():
    """6 ordinary training songs + exact copies of the 3 reference songs, and models trained on them."""
    ref = {f"ref-{j}": song(100 + j) for j in range(3)}
    train = {f"train-{i}": song(i) for i in range(6)}
    train.update({f"dup-{j}": ref[f"ref-{j}"] for j in range(3)})
    return train, ref, tiny_models(train, steps=30)


def test_zero_lr_gives_exactly_zero_and_leaves_the_models_untouched(world):
    train, ref, models = world
    before = {t: {k: v.clone() for k, v in m.state_dict().items()} for t, m in models.items()}
    res = attribution(models, TINY, train, ref, UnlearningConfig(mode="exact", lr=0.0, **SEG))
    assert res.delta.shape == (len(train), len(ref), len(LABELS))
    assert np.all(res.delta == 0.0)  # identical segments, eval mode: the same loss bit for bit
    assert res.base_loss.shape == (len(train), len(LABELS)) and np.all(res.base_loss > 0)
    # a real step is restored afterwards (exact mode edits the parameters of a copy, then puts them back)
    attribution(models, TINY, train, ref, UnlearningConfig(mode="exact", lr=1e-2, steps=2, **SEG))
    for t, m in models.items():
        for k, v in m.state_dict().items():
            assert torch.equal(v, before[t][k]), (t, k)
    assert all(not m.training for m in models.values())


@pytest.mark.parametrize("mode", ["exact", "first_order"])
def test_a_training_copy_of_a_reference_song_gets_the_highest_attribution(world, mode):
    train, ref, models = world
    res = attribution(models, TINY, train, ref, UnlearningConfig(mode=mode, lr=1e-5, **SEG))
    assert set(res.seconds) >= {"fisher", "unlearning", "attribution", "total"}
    per_ref = res.delta.mean(axis=2)  # (N, M): averaged over the four target models
    for j, rid in enumerate(res.ref_ids):
        order = [res.train_ids[i] for i in np.argsort(-per_ref[:, j])]
        assert order[0] == f"dup-{rid[-1]}", (mode, rid, order)
        # unlearning a song raises its own loss: gradient ascent, not descent
        assert per_ref[res.train_ids.index(f"dup-{rid[-1]}"), j] > 0
    # the attribution is specific: each copy is the top song for its own reference song only
    assert len({int(np.argmax(per_ref[:, j])) for j in range(len(res.ref_ids))}) == len(res.ref_ids)


def test_first_order_converges_to_exact_as_lr_goes_to_zero(world):
    train, ref, models = world
    # the tiny model leaves the linear regime above lr ~1e-4 (N = 9 songs: the step is lr/N); float32 keeps the
    # exact differences clean down to ~1e-6 (measured: the error floor from rounding is ~5e-4 at 1e-7)
    errors = []
    for lr in (1e-4, 1e-5, 1e-6):
        c = dict(lr=lr, damping=0.1, **SEG)
        ex = attribution(models, TINY, train, ref, UnlearningConfig(mode="exact", **c))
        fo = attribution(models, TINY, train, ref, UnlearningConfig(mode="first_order", **c))
        errors.append(np.linalg.norm(fo.delta - ex.delta) / np.linalg.norm(ex.delta))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.01 and errors[0] / errors[2] > 20, errors  # O(lr): about a decade per decade
    # float64 models run in float64 throughout (no float32 rounding floor)
    models64 = {t: copy.deepcopy(m).double() for t, m in models.items()}
    c = dict(lr=1e-6, damping=0.1, **SEG)
    ex = attribution(models64, TINY, train, ref, UnlearningConfig(mode="exact", **c))
    fo = attribution(models64, TINY, train, ref, UnlearningConfig(mode="first_order", **c))
    assert np.linalg.norm(fo.delta - ex.delta) / np.linalg.norm(ex.delta) < 0.01


def test_fisher_matches_brute_force_per_song_gradients(world):
    train, _, models = world
    model, spec = models["vocals"], spectrogram(TINY)
    segs = [song_segments(s, UnlearningConfig(**SEG), SR) for s in train.values()]
    pairs = [(mix, y["vocals"]) for mix, y in segs]
    kept: list[torch.Tensor] = []
    fisher = fisher_diagonal(model, spec, pairs, keep=kept)
    params = list(model.parameters())
    assert [f.shape for f in fisher] == [p.shape for p in params] and all(f.dtype == torch.float64 for f in fisher)
    # brute force: one backward per song, squares summed in float64
    brute = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for i, (mix, y) in enumerate(pairs):
        model.zero_grad()
        torch.nn.functional.mse_loss(model(spec(mix)), spec(y)).backward()
        for b, p in zip(brute, params):
            b += p.grad.double() ** 2
        assert torch.allclose(kept[i], torch.cat([p.grad.reshape(-1) for p in params]))
    model.zero_grad()
    for f, b in zip(fisher, brute):
        assert torch.allclose(f, b / len(pairs), rtol=1e-5, atol=1e-12)
    # and an independent path: torch.func per-sample gradients (vmap over songs; the LSTM falls back to a loop)
    named = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, mix, y):
        return torch.nn.functional.mse_loss(functional_call(model, (p, buffers), (spec(mix),)), spec(y))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no batching rule for aten::mkldnn_rnn_layer": a slow fallback, fine
        g = vmap(grad(loss), in_dims=(None, 0, 0))(named, torch.stack([m for m, _ in pairs]),
                                                    torch.stack([y for _, y in pairs]))
    for f, (k, v) in zip(fisher, g.items()):
        assert torch.allclose(f, v.double().square().mean(0), rtol=1e-4, atol=1e-12), k


def test_song_segments_are_evenly_spaced_and_the_mixture_is_the_stem_sum():
    s = song(7, seconds=1.0)
    mix, stems = song_segments(s, UnlearningConfig(segments=3, seq_dur=0.25), SR)
    assert mix.shape == (3, 1, 2000)
    assert torch.allclose(mix, sum(stems.values()))
    for k, start in enumerate((0, 3000, 6000)):  # linspace(0, 8000 - 2000, 3)
        assert torch.equal(stems["bass"][k, 0], torch.from_numpy(s["bass"][start:start + 2000, 0]))
    short, _ = song_segments(song(8, seconds=0.1), UnlearningConfig(segments=2, seq_dur=0.25), SR)
    assert short.shape == (2, 1, 2000) and torch.all(short[:, :, 800:] == 0)  # zero-padded like StemPool


def test_cleaner_scores_every_training_stem_from_the_view_only(tmp_path, world, monkeypatch):
    _, _, models = world
    w = StemSetWriter(tmp_path / "set", SR, 1)
    for j in range(3):
        w.add_track(f"ref-{j}", "reference", song(100 + j, 1.0))
    for i in range(4):
        w.add_track(f"train-{i}", "train", song(i, 1.0), meta={"defect": "secret"})
    w.add_track("test-0", "test", song(50, 1.0))
    ss = w.close()
    save(models, TINY, tmp_path / "models" / "baseline" / "seed1")
    save(models, TINY, tmp_path / "models" / "baseline" / "seed0")
    assert baseline_folder(tmp_path / "models" / "baseline", None).name == "seed0"

    loaded = []
    view = StemView.of(ss)
    view.load_audio = lambda tid, label: loaded.append(tid) or ss.load(tid, label)
    monkeypatch.setattr(type(ss), "meta", lambda *a: pytest.fail("the cleaner read track metadata"))
    cleaner = get_cleaner("unlearning", {"model": str(tmp_path / "models" / "baseline"), "seq_dur": 0.5,
                                         "device": "cpu", "deflate": False})
    table = cleaner.score(view)
    assert len(table) == 16 and np.isfinite(table.score).all() and np.isfinite(table.song_score).all()
    assert set(loaded) == {f"ref-{j}" for j in range(3)} | {f"train-{i}" for i in range(4)}  # never test/truth
    res = cleaner.result
    assert res.delta.shape == (4, 3, 4) and res.targets == list(LABELS)
    for row in table.itertuples():  # per-target score for the row's label; song score = unified
        i = res.train_ids.index(row.track_id)
        assert row.score == pytest.approx(res.per_target[i, LABELS.index(row.label)])
        assert row.song_score == pytest.approx(res.unified[i])
    assert len(res.table()) == 4 * 3 * 4
    # deflate (the default): the scores come from dL minus its leading singular component, per target
    deflated = get_cleaner("unlearning", {"model": str(tmp_path / "models" / "baseline"), "seq_dur": 0.5,
                                          "device": "cpu"}).score(StemView.of(ss))
    d = deflate(res.delta)
    for k in range(4):
        assert np.linalg.matrix_rank(d[:, :, k], tol=1e-9 * np.abs(res.delta).max()) <= 2  # 3 refs - 1
    for row in deflated.itertuples():
        i = res.train_ids.index(row.track_id)
        assert row.score == pytest.approx(d[i, :, LABELS.index(row.label)].mean(), abs=1e-12)
        assert row.song_score == pytest.approx(d[i].mean(), abs=1e-12)

    with pytest.raises(CleanerError, match="unlearning.mode"):
        get_cleaner("unlearning", {"mode": "newton", "model": str(tmp_path / "models" / "baseline")}).score(view)
    with pytest.raises(CleanerError, match="unlearning.model"):
        get_cleaner("unlearning", {"model": str(tmp_path / "nowhere")}).score(view)

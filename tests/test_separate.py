import numpy as np
import pandas as pd
import pytest
import torch

from stemsift import LABELS
from stemsift.separate import model as sepmodel
from stemsift.separate.data import RandomMixSampler, StemPool, fixed_segments
from stemsift.separate.selection import SelectionError, check_drawable, drop_tracks, given_selection, pools
from stemsift.separate.train import TrainConfig, separate_track, train_separator
from stemsift.stages.select import clean_songs, fixed_selections
from stemsift.stages.report import compare
from stemsift.stemset import StemSetWriter

from conftest import make_stems

SR = 8000
TINY = sepmodel.ModelConfig(sample_rate=SR, n_fft=256, n_hop=64, hidden_size=16, nb_layers=1, bandwidth=4000)


@pytest.fixture(scope="module")
def stemset(tmp_path_factory):
    w = StemSetWriter(tmp_path_factory.mktemp("set"), SR, 2, source="test")
    for i in range(8):
        split = "train" if i < 6 else "reference"
        w.add_track(f"{split}-{i}", split, make_stems(i, 2.0, SR))
    return w.close()


def test_sampler_honours_per_target_selection(stemset):
    train = stemset.track_ids("train")
    sel = drop_tracks(given_selection(stemset.stems, train), {train[0]}, targets=("vocals",))
    pool = StemPool(stemset, train, SR)
    voc = RandomMixSampler(pool, sel, "vocals", 800, np.random.default_rng(0))
    bass = RandomMixSampler(pool, sel, "bass", 800, np.random.default_rng(0))
    for _ in range(300):
        voc.example(), bass.example()
    drawn_v = {k[0] for k in voc.drawn}
    assert train[0] not in drawn_v and len(drawn_v) == len(train) - 1   # removed for vocals only ...
    assert train[0] in {k[0] for k in bass.drawn}                        # ... still drawn for bass
    assert all(label == "vocals" for (_, label, role) in voc.drawn if role == "target")
    assert {label for (_, label, role) in voc.drawn if role == "interferer"} == {"bass", "drums", "other"}
    assert sum(n for k, n in voc.drawn.items() if k[2] == "target") == 300


def test_selection_roles_and_errors(stemset):
    sel = given_selection(stemset.stems, stemset.track_ids("train"))
    tgt, itf = pools(sel, "drums")
    assert all(lb == "drums" for _, lb in tgt) and set(itf) == {"vocals", "bass", "other"}
    with pytest.raises(SelectionError, match="no 'drums' stem"):
        check_drawable(drop_tracks(sel, set(stemset.track_ids("train")), targets=("drums",)))


def test_sampler_mixture_is_sum_and_augmentation_bounds(stemset):
    pool = StemPool(stemset, stemset.track_ids("train"), SR)
    s = RandomMixSampler(pool, given_selection(stemset.stems), "bass", 1000, np.random.default_rng(1))
    x, y = s.batch(4)
    assert x.shape == y.shape == (4, 2, 1000)
    assert not torch.allclose(x, y)  # interferers were added
    single = RandomMixSampler(pool, given_selection(stemset.stems), "bass", 1000, np.random.default_rng(1))
    single.interferers = {}
    x1, y1 = single.batch(4)
    assert torch.equal(x1, y1)  # with no interferers the mixture is the target


def test_few_steps_lower_the_loss_and_separator_roundtrip(stemset, tmp_path):
    train = stemset.track_ids("train")
    pool = StemPool(stemset, train, SR)
    valid = fixed_segments(stemset, stemset.track_ids("reference"), SR, 4000, 2)
    cfg = TrainConfig(epochs=4, steps_per_epoch=6, batch_size=4, seq_dur=0.5, lr=0.01, stats_batches=2)
    res = train_separator(pool, given_selection(stemset.stems, train), valid, TINY, cfg, 0, torch.device("cpu"),
                          targets=("bass", "drums"))
    first, last = res.history[0], res.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert min(r["valid_loss_bass"] for r in res.history) < first["valid_loss_bass"]
    sepmodel.save(res.models, TINY, tmp_path / "m", {"seed": 0})
    models, cfg2, meta = sepmodel.load(tmp_path / "m")
    assert cfg2 == TINY and meta["seed"] == 0
    for t in models:
        for a, b in zip(models[t].state_dict().values(), res.models[t].state_dict().values()):
            assert torch.equal(a, b)
    est = separate_track(sepmodel.separator(models, TINY), stemset.load(train[0], "mixture"), torch.device("cpu"))
    assert set(est) == {"bass", "drums"} and est["bass"].shape == (2 * SR, 2)


def test_training_is_deterministic_for_a_seed(stemset):
    train = stemset.track_ids("train")
    pool = StemPool(stemset, train, SR)
    valid = fixed_segments(stemset, stemset.track_ids("reference"), SR, 4000, 1)
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, seq_dur=0.5, stats_batches=1)
    runs = [train_separator(pool, given_selection(stemset.stems, train), valid, TINY, cfg, 7, torch.device("cpu"),
                            targets=("other",)) for _ in range(2)]
    assert runs[0].history == runs[1].history


def test_oracle_keeps_only_clean_songs_and_cleaned_keeps_all_without_cleaner(stemset):
    train = stemset.track_ids("train")
    truth = pd.DataFrame([(t, lb, "bleeding" if (t == train[1] and lb == "bass") else "clean")
                          for t in train for lb in LABELS], columns=["track_id", "label", "defect"])
    assert train[1] not in clean_songs(truth) and len(clean_songs(truth)) == len(train) - 1
    sets = fixed_selections(stemset, truth)
    assert set(sets["oracle"].track_id) == set(train) - {train[1]}
    assert set(sets["baseline"].track_id) == set(train)
    assert set(sets["reference"].track_id) == set(stemset.track_ids("reference"))


def test_report_gain_and_gap_closed():
    table = compare({"baseline": {"sdr_avg": 4.0}, "cleaned": {"sdr_avg": 4.5}, "oracle": {"sdr_avg": 5.0}})
    assert table["gain_db"] == 0.5 and table["oracle_gap_db"] == 1.0 and table["gap_closed"] == 0.5
    assert compare({"baseline": {"sdr_avg": 4.0}, "cleaned": {"sdr_avg": 4.0}, "oracle": {"sdr_avg": 4.0}})["gap_closed"] is None


def test_seeds_trained_in_parallel_workers_equal_the_serial_ones(stemset, tmp_path):
    from stemsift.separate.jobs import SeedJob, fit_all

    train = stemset.track_ids("train")
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, seq_dur=0.5, stats_batches=1)
    jobs = lambda where: [SeedJob(root=str(stemset.root), selection=given_selection(stemset.stems, train),  # noqa: E731
                                  tracks=train, cfg=TINY, tc=cfg, seed=s, device="cpu", folder=str(tmp_path / where / f"s{s}"),
                                  valid_segments=1) for s in (0, 1)]
    threads = torch.get_num_threads()
    fit_all(jobs("serial"), workers=1, threads=1)
    assert torch.get_num_threads() == threads  # the in-process path restores the thread count
    fit_all(jobs("parallel"), workers=2, threads=1)
    for s in (0, 1):
        a, _, meta = sepmodel.load(tmp_path / "serial" / f"s{s}")
        b, _, _ = sepmodel.load(tmp_path / "parallel" / f"s{s}")
        assert meta["threads"] == 1 and meta["seed"] == s
        for t in LABELS:
            for x, y in zip(a[t].state_dict().values(), b[t].state_dict().values()):
                assert torch.equal(x, y)
    one, _, _ = sepmodel.load(tmp_path / "serial" / "s1")
    zero, _, _ = sepmodel.load(tmp_path / "serial" / "s0")
    assert not torch.equal(next(iter(one["bass"].state_dict().values())), next(iter(zero["bass"].state_dict().values())))

"""SHD preprocessing: binning against an exact-arithmetic loop, dense == events, splits,
dropout, the SHD and SHD-Adding samplers."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from elm_jax.events import SpikeEvents
from elm_jax.tasks.spoken_digits import formats as F
from elm_jax.tasks.spoken_digits import preprocess as P
from elm_jax.tasks.spoken_digits import synthetic as S


@pytest.fixture(scope="module")
def data():
    """Synthetic samples plus one with spikes on bin edges, at 1 s and after it."""
    syn = S.synthetic_dataset(37, num_classes=20, num_speakers=3, seed=4)
    per = [syn.sample(i) for i in range(len(syn))]
    edge_t = np.array([0.0, 0.002, 0.004, 0.01, 0.5, 0.998, 0.999, 1.0, 1.3], np.float16)
    per.append((edge_t.astype(np.float32), np.array([0, 1, 1, 5, 699, 3, 3, 2, 9])))
    times = [t for t, _ in per]
    units = [u for _, u in per]
    return F.SpikeDataset.from_samples(times, units, list(syn.labels) + [13],
                                       list(syn.speakers) + [2],
                                       class_names=syn.class_names)


def _loop_bins(data, indices, bin_ms, duration_ms=1000):
    """Independent binning: exact rational comparison of every spike with the edges
    k * bin_ms / 1000, Python loops, counts summed."""
    steps = -(-duration_ms // bin_ms)
    rows = [np.atleast_1d(r) for r in indices]
    out = np.zeros((len(rows), steps * len(rows[0]), 700), np.float32)
    for b, row in enumerate(rows):
        for s, i in enumerate(row):
            if i < 0:
                continue
            t, u = data.sample(int(i))
            for ti, ui in zip(t.tolist(), u.tolist()):
                exact = Fraction(ti)   # the float32 (= float16) value exactly
                if exact >= Fraction(duration_ms, 1000):
                    continue
                k = int(exact * 1000 // bin_ms)          # edge_k <= t < edge_k+1
                assert Fraction(k * bin_ms, 1000) <= exact < Fraction((k + 1) * bin_ms, 1000)
                out[b, s * steps + k, ui] += 1
    return out


@pytest.mark.parametrize("bin_ms", [1, 2, 6, 10, 100])
def test_binning_matches_exact_loop(data, bin_ms):
    idx = [37, 0, 5, 36, 12]
    dense = P.bin_dense(data, idx, bin_ms)
    assert dense.shape == (5, P.num_bins(bin_ms), 700) and dense.dtype == np.float32
    np.testing.assert_array_equal(dense, _loop_bins(data, idx, bin_ms))
    # the edge sample: 0.002 s starts bin 1 at 2 ms; 1.0 and 1.3 s are dropped
    t_last = P.spike_bins(data.sample(37)[0], bin_ms)
    assert t_last[-2] == -1 and t_last[-1] == -1 and (t_last[:-2] >= 0).all()
    assert dense[0].sum() == 7
    # segments: (B, 2) rows are the two samples back to back
    pairs = [[37, 1], [2, 2], [-1, 3]]
    np.testing.assert_array_equal(P.bin_dense(data, pairs, bin_ms),
                                  _loop_bins(data, pairs, bin_ms))


def test_every_float16_time_for_every_bin_size():
    """All float16 times in [0, 1.5) s, b = 1..100 ms: the bin equals the exact integer
    floor(t * 1000 / b) (t = m / 2**24 exactly for float16), or -1 at t >= 1 s."""
    f16 = np.arange(2 ** 16, dtype=np.uint16).view(np.float16)
    f16 = f16[np.isfinite(f16) & (f16 >= 0) & (f16 < 1.5)]
    m = (f16.astype(np.float64) * 2.0 ** 24).astype(np.int64)     # exact integers
    assert np.array_equal(m / 2.0 ** 24, f16.astype(np.float64))
    for b in range(1, 101):
        exact = np.where(m < 2 ** 24, (m * 1000) // (b * 2 ** 24), -1)
        np.testing.assert_array_equal(P.spike_bins(f16, b), exact, err_msg=f"b={b}")


def test_counts_are_summed_and_published_sizes():
    assert [P.num_bins(b) for b in (1, 2, 5, 10, 20, 50, 100)] == \
        [1000, 500, 200, 100, 50, 20, 10]
    one = F.SpikeDataset.from_samples([np.array([0.0011, 0.0012, 0.0019, 0.0021])],
                                      [np.array([4, 4, 4, 4])], [0])
    dense = P.bin_dense(one, [0], 2)
    assert dense[0, 0, 4] == 3 and dense[0, 1, 4] == 1
    with pytest.raises(ValueError, match="bin_ms"):
        P.num_bins(0)


def test_dense_equals_events(data):
    for bin_ms in (2, 10):
        idx = np.arange(8)
        entries = P.bin_entries(data, idx, bin_ms)
        events = entries.to_events()
        assert isinstance(events, SpikeEvents) and events.capacity % 64 == 0
        assert events.shape == (8, P.num_bins(bin_ms), 700)
        np.testing.assert_array_equal(np.asarray(events.to_dense()),
                                      P.bin_dense(data, idx, bin_ms))
        np.testing.assert_array_equal(np.asarray(P.to_events(data, idx, bin_ms).to_dense()),
                                      entries.to_dense())
    with pytest.raises(ValueError, match="capacity=3 is too small"):
        entries.to_events(capacity=3)


@pytest.mark.parametrize("cls", [P.EpochSampler, P.AddingSampler])
def test_samplers_events_equal_dense_with_dropout(data, cls):
    kw = {"batch_size": 4, "bin_ms": 10, "seed": 3, "dropout": 0.5}
    if cls is P.AddingSampler:
        kw["num_batches"] = 3
    ev, de = cls(data, input_format="events", **kw), cls(data, input_format="dense", **kw)
    assert ev.num_steps == de.num_steps == cls.segments * 100
    for epoch, i in [(0, 0), (1, 2)]:
        a, b = ev.batch(epoch, i), de.batch(epoch, i)
        assert a["x"].capacity == ev.capacity            # one shape for the whole run
        np.testing.assert_array_equal(np.asarray(a["x"].to_dense()), b["x"])
        np.testing.assert_array_equal(a["y"], b["y"])
        np.testing.assert_array_equal(a["weight"], b["weight"])
    # binning every batch (no precomputed split) gives the very same batches
    fresh = cls(data, input_format="events", precompute=False, **kw)
    assert fresh.binned is None and fresh.capacity == ev.capacity
    for epoch, i in [(0, 0), (2, 1)]:
        a, b = ev.batch(epoch, i)["x"], fresh.batch(epoch, i)["x"]
        for field in ("time", "channel", "value"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    # the "split" capacity bounds every batch the sampler can draw
    per = P.entries_per_sample(data, 10)
    assert ev.capacity >= cls.segments * per.max()
    assert cls(data, input_format="events", capacity="batch", **kw).capacity is None


def test_binned_split_matches_bin_entries(data):
    train, _ = P.validation_split(data, 0.3, seed=0)
    store = P.BinnedSplit(data, train, bin_ms=6)
    np.testing.assert_array_equal(store.per_sample, P.entries_per_sample(data, 6, indices=train))
    rows = np.array([[train[0], train[3]], [train[3], -1], [-1, train[1]]])
    a, b = store.entries(rows), P.bin_entries(data, rows, 6)
    for field in ("row", "time", "channel", "count"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    outside = np.setdiff1d(np.arange(len(data)), train)[0]
    with pytest.raises(ValueError, match="outside the stored split"):
        store.entries([outside])


def test_splits(data):
    train, val = P.validation_split(data, 0.2, seed=0)
    mask = np.random.default_rng(0).binomial(1, 0.2, size=len(data)).astype(bool)
    np.testing.assert_array_equal(val, np.flatnonzero(mask))       # the reference rule
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(len(data)))
    np.testing.assert_array_equal(P.validation_split(len(data), 0.2, 0)[1], val)
    assert not np.array_equal(P.validation_split(len(data), 0.2, 1)[1], val)
    _big_train, big_val = P.validation_split(8156, 0.2, 0)
    assert 0.18 < big_val.size / 8156 < 0.22
    rest, held = P.speaker_split(data, 1)
    assert (data.speakers[held] == 1).all() and (data.speakers[rest] != 1).all()
    np.testing.assert_array_equal(np.sort(np.concatenate([rest, held])), np.arange(len(data)))
    _rest2, held2 = P.speaker_split(data, 2, indices=train)
    assert set(held2) <= set(train) and (data.speakers[held2] == 2).all()
    with pytest.raises(ValueError, match="speakers present are"):
        P.speaker_split(data, 9)


def test_epoch_sampler(data):
    train, val = P.validation_split(data, 0.3, seed=1)
    s = P.EpochSampler(data, train, batch_size=4, bin_ms=10, seed=5, input_format="dense")
    assert s.num_batches == len(train) // 4
    seen = np.concatenate([s.batch_indices(0, i) for i in range(s.num_batches)])
    assert len(set(seen.tolist())) == seen.size and set(seen) <= set(train)
    assert not np.array_equal(seen, np.concatenate(
        [s.batch_indices(1, i) for i in range(s.num_batches)]))
    again = P.EpochSampler(data, train, batch_size=4, bin_ms=10, seed=5, input_format="dense")
    b = s.batch(1, 2)
    np.testing.assert_array_equal(b["x"], again.batch_at(s.num_batches + 2)["x"])
    rows = s.batch_indices(1, 2)
    np.testing.assert_array_equal(b["x"], P.bin_dense(data, rows, 10))
    np.testing.assert_array_equal(b["y"], data.labels[rows])
    # evaluation: every sample once, in order, last batch padded with weight 0
    ev = P.EpochSampler(data, val, batch_size=4, bin_ms=10, train=False,
                        input_format="dense", dropout=0.5)
    assert ev.num_batches == -(-len(val) // 4) and ev.dropout == 0.0
    batches = list(ev.batches(0))
    weights = np.concatenate([x["weight"] for x in batches])
    assert weights.sum() == len(val) and (weights[len(val):] == 0).all()
    np.testing.assert_array_equal(np.concatenate([x["y"] for x in batches])[:len(val)],
                                  data.labels[val])
    last = batches[-1]
    pad = last["weight"] == 0
    assert (last["x"][pad] == 0).all()
    np.testing.assert_array_equal(ev.batch(0, 1)["x"], ev.batch(7, 1)["x"])


def test_dropout(data):
    idx = np.arange(16)
    kw = {"batch_size": 16, "bin_ms": 2, "seed": 0, "input_format": "dense"}
    clean = P.bin_dense(data, idx, 2)
    s = P.EpochSampler(data, idx, train=False, dropout=0.5, eval_dropout=True, **kw)
    x = s.batch(0, 0)["x"]
    kept = (x > 0).sum() / (clean > 0).sum()
    assert 0.45 < kept < 0.55
    assert ((x == clean) | (x == 0)).all()            # entries dropped whole, no rescale
    np.testing.assert_array_equal(x, s.batch(3, 0)["x"])     # evaluation: deterministic
    np.testing.assert_array_equal(
        P.EpochSampler(data, idx, train=False, dropout=0.5, **kw).batch(0, 0)["x"], clean)
    tr = P.EpochSampler(data, idx, train=True, dropout=0.5, **kw)
    assert not np.array_equal(tr.batch(0, 0)["x"], tr.batch(1, 0)["x"])
    with pytest.raises(ValueError, match="dropout"):
        P.EpochSampler(data, dropout=1.0)


def test_adding_sampler(data):
    train, val = P.validation_split(data, 0.3, seed=0)
    s = P.AddingSampler(data, train, batch_size=4, bin_ms=10, seed=2, input_format="dense")
    assert s.num_batches == P.ADDING_NUM_BATCHES["train"] == 2000
    assert P.AddingSampler(data, train, train=False).num_batches == 2000
    pairs = s.batch_indices(0, 5)
    assert pairs.shape == (4, 2) and set(pairs.ravel()) <= set(train)
    b = s.batch(0, 5)
    assert b["x"].shape == (4, 200, 700)
    np.testing.assert_array_equal(b["x"][:, :100], P.bin_dense(data, pairs[:, 0], 10))
    np.testing.assert_array_equal(b["x"][:, 100:], P.bin_dense(data, pairs[:, 1], 10))
    la, lb = data.labels[pairs[:, 0]], data.labels[pairs[:, 1]]
    np.testing.assert_array_equal(b["y"], la % 10 + lb % 10)
    assert b["y"].max() <= 18
    assert not np.array_equal(pairs, s.batch_indices(1, 5))      # new pairs each epoch
    ev = P.AddingSampler(data, val, batch_size=4, bin_ms=10, seed=2, train=False,
                         num_batches=P.ADDING_NUM_BATCHES["val"], input_format="dense")
    assert ev.num_batches == 500
    np.testing.assert_array_equal(ev.batch_indices(0, 7), ev.batch_indices(3, 7))
    # with replacement: draws cover the split, target distribution spans 0..18
    labels = np.concatenate([s.batch(0, i)["y"] for i in range(60)])
    assert labels.min() >= 0 and len(np.unique(labels)) > 10


def test_prefetched_batches_equal_direct(data):
    s = P.EpochSampler(data, batch_size=4, bin_ms=10, input_format="dense", dropout=0.5)
    direct = list(s.batches(2, start=1))
    ahead = list(s.batches(2, start=1, prefetch=3))
    assert len(ahead) == len(direct) == s.num_batches - 1
    for a, b in zip(ahead, direct):
        np.testing.assert_array_equal(a["x"], b["x"])
    gen = s.batches(0, prefetch=2)
    next(gen)
    gen.close()                                     # stops the producer thread

    def broken():
        yield s.batch(0, 0)
        raise RuntimeError("reader failed")
    with pytest.raises(RuntimeError, match="reader failed"):
        list(P.prefetched(broken(), 2))


def test_loader_throughput(data):
    for fmt in P.INPUT_FORMATS:
        s = P.EpochSampler(data, batch_size=8, bin_ms=2, input_format=fmt, dropout=0.5)
        assert P.loader_throughput(s, num_batches=3) > 0

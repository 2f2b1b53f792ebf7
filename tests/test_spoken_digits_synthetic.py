"""The SYNTHETIC spike-digit generator: layout, labelling, determinism, learnability."""

from __future__ import annotations

import numpy as np

from elm_jax.tasks.spoken_digits import formats as F
from elm_jax.tasks.spoken_digits import synthetic as S


def test_written_file_is_labelled_synthetic_and_round_trips(tmp_path):
    data = S.synthetic_dataset(40, num_classes=20, num_speakers=3, seed=2)
    path = S.write_synthetic(tmp_path / "syn.h5.gz", 40, num_classes=20, num_speakers=3,
                             seed=2)
    back = F.read_shd(path, cache_dir=tmp_path / "cache")
    assert back.attrs["description"].startswith("SYNTHETIC")
    assert all(k.startswith("synthetic-") for k in back.class_names)
    assert back.class_names[10] == "synthetic-german-null"
    assert back.meta_info["gender"][0] == b"synthetic"
    np.testing.assert_array_equal(back.labels, data.labels)
    np.testing.assert_array_equal(back.speakers, np.repeat([0, 1, 2], [14, 13, 13]))
    np.testing.assert_array_equal(back.offsets, data.offsets)
    np.testing.assert_array_equal(back.times, data.times)  # float16 values both
    np.testing.assert_array_equal(back.units, data.units)
    assert back.units.max() < 700 and back.times.min() >= 0
    for i in range(len(back)):  # sorted by time, then channel, within each sample
        t, u = back.sample(i)
        assert np.all(np.diff(t) >= 0)
        assert np.all(np.diff(u.astype(int))[np.diff(t) == 0] >= 0)


def test_seeded():
    a, b = S.synthetic_dataset(10, seed=1), S.synthetic_dataset(10, seed=1)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.units, b.units)
    c = S.synthetic_dataset(10, seed=2)
    assert a.times.shape != c.times.shape or not np.array_equal(a.times, c.times)
    # another first_index: other samples of the same speakers and classes
    d = S.synthetic_dataset(10, seed=1, first_index=10)
    np.testing.assert_array_equal(d.labels, a.labels)
    assert not np.array_equal(d.spike_counts, a.spike_counts)


def _features(data):
    """Independent coarse features: spike counts in 100-ms x 35-channel cells."""
    out = np.zeros((len(data), 10, 20))
    for i in range(len(data)):
        t, u = data.sample(i)
        out[i] = np.histogram2d(t, u, bins=[np.linspace(0, 1, 11), np.linspace(0, 700, 21)])[0]
    return out.reshape(len(data), -1)


def test_classes_are_learnable_across_samples_and_speakers(tmp_path):
    paths = S.write_synthetic_shd(tmp_path, num_train=160, num_test=50, num_classes=10,
                                  num_speakers=4, seed=0)
    train, test = F.read_shd(paths["train"]), F.read_shd(paths["test"])
    assert set(np.unique(test.speakers)) == {0, 1, 2, 3, 4}   # speaker 4 is unseen
    xtr, xte = _features(train), _features(test)
    mu = np.stack([xtr[train.labels == k].mean(0) for k in range(10)])
    pred = np.argmin(((xte[:, None] - mu[None]) ** 2).sum(-1), axis=1)
    accuracy = (pred == test.labels).mean()
    assert accuracy > 0.5, accuracy       # chance is 0.1

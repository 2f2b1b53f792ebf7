"""SHD HDF5 layout: writer -> reader round trip (.h5/.gz/.zip), strict errors, discovery,
the real FSDD-derived file."""

from __future__ import annotations

import gzip
import os

import h5py
import numpy as np
import pytest
from helpers import require_shared

from elm_jax.tasks.spoken_digits import formats as F


def _samples(seed=0, n=12, classes=20):
    rng = np.random.default_rng(seed)
    times = [np.sort(rng.uniform(0, 1.3, rng.integers(0, 200))) for _ in range(n)]
    units = [rng.integers(0, 700, len(t)) for t in times]
    return times, units, rng.integers(0, classes, n), rng.integers(0, 4, n)


@pytest.mark.parametrize("suffix", [".h5", ".h5.gz", ".h5.zip"])
def test_round_trip(tmp_path, suffix):
    times, units, labels, speakers = _samples()
    keys = [f"lang-{k}" for k in range(20)]
    path = F.write_shd(tmp_path / f"shd_train{suffix}", times, units, labels, speakers,
                       class_names=keys, meta_info={"age": np.arange(4, dtype=np.uint16)},
                       attrs={"description": "fixture"})
    cache = tmp_path / "cache"
    data = F.read_shd(path, cache_dir=cache)
    assert len(data) == len(labels) and data.class_names == tuple(keys)
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.speakers, speakers)
    np.testing.assert_array_equal(data.meta_info["age"], np.arange(4))
    assert data.attrs["description"] == "fixture"
    for i in range(len(labels)):
        t, u = data.sample(i)
        assert t.dtype == np.float32 and u.dtype == np.uint16
        # stored as float16 (as SHD); read back exactly, cast to float32
        np.testing.assert_array_equal(t, times[i].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(u, units[i])
    # the h5py view of the file is the documented layout
    h5 = F.resolve_h5(path, cache)
    with h5py.File(h5, "r") as f:
        assert h5py.check_vlen_dtype(f["spikes/times"].dtype) == np.float16
        assert h5py.check_vlen_dtype(f["spikes/units"].dtype) == np.uint16
        assert f["labels"].dtype == np.uint16 and f["extra/speaker"].dtype == np.uint16
    if suffix != ".h5":
        # decompressed once into the cache, no temporary files left behind
        assert [p.name for p in cache.iterdir()] == [h5.name]
        assert F.resolve_h5(path, cache) == h5


def test_spikes_and_subset(tmp_path):
    times, units, labels, speakers = _samples(1)
    data = F.read_shd(F.write_shd(tmp_path / "a.h5", times, units, labels, speakers))
    idx = [5, 0, 5, 11]
    _, u, counts = data.spikes(idx)
    np.testing.assert_array_equal(counts, [len(times[i]) for i in idx])
    np.testing.assert_array_equal(u, np.concatenate([units[i] for i in idx]))
    sub = data.subset(idx)
    np.testing.assert_array_equal(sub.labels, labels[idx])
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(sub.sample(k)[0], data.sample(i)[0])
    # class names default to class-k without extra/keys... here the writer wrote them
    assert data.num_classes == int(labels.max()) + 1


def _expect(path, *words):
    with pytest.raises(ValueError) as err:
        F.read_shd(path, cache_dir=path.parent / "cache")
    for w in (str(path),) + words:
        assert w in str(err.value), (w, str(err.value))
    return err


def test_not_hdf5_and_truncated(tmp_path):
    text = tmp_path / "shd_train.h5"
    text.write_text("not hdf5")
    _expect(text, "not a readable HDF5 file")
    times, units, labels, speakers = _samples(2)
    good = F.write_shd(tmp_path / "good.h5", times, units, labels, speakers)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _expect(cut, "truncated")


def test_corrupt_dataset_is_named(tmp_path):
    times, units, labels, speakers = _samples(3)
    good = F.write_shd(tmp_path / "good.h5", times, units, labels, speakers)
    for name in ("spikes/units", "labels"):
        with h5py.File(good, "r") as f:
            info = f[name].id.get_chunk_info(0)
        raw = bytearray(good.read_bytes())
        raw[info.byte_offset:info.byte_offset + info.size] = b"\xff" * info.size
        bad = tmp_path / f"bad_{name.replace('/', '_')}.h5"
        bad.write_bytes(bytes(raw))
        _expect(bad, f"'{name}'", "corrupt")


def test_truncated_gzip_leaves_no_cache(tmp_path):
    times, units, labels, speakers = _samples(4)
    gz = F.write_shd(tmp_path / "shd_test.h5.gz", times, units, labels, speakers)
    cut = tmp_path / "cut.h5.gz"
    cut.write_bytes(gz.read_bytes()[:-200])
    _expect(cut, "corrupt or truncated")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    bad_zip = tmp_path / "x.h5.zip"
    bad_zip.write_bytes(b"PK\x03\x04 nonsense")
    _expect(bad_zip, "corrupt or truncated")


def _foreign(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if isinstance(value, tuple):  # vlen: (base dtype, list of arrays)
                ds = f.create_dataset(name, (len(value[1]),), dtype=h5py.vlen_dtype(value[0]))
                for i, a in enumerate(value[1]):
                    ds[i] = a
            else:
                f.create_dataset(name, data=value)
    return path


def test_foreign_layouts_name_the_dataset(tmp_path):
    t = (np.float16, [np.array([0.1, 0.2]), np.array([0.3])])
    u = (np.uint16, [np.array([1, 2]), np.array([3])])
    _expect(_foreign(tmp_path / "a.h5", **{"spikes/times": t, "spikes/units": u}),
            "'labels'", "missing")
    _expect(_foreign(tmp_path / "b.h5", **{"spikes/times": np.zeros(2), "spikes/units": u,
                                          "labels": np.zeros(2, np.uint16)}),
            "'spikes/times'", "vlen")
    _expect(_foreign(tmp_path / "c.h5", **{"spikes/times": t, "spikes/units": u,
                                          "labels": np.zeros(3, np.uint16)}),
            "'labels'", "expected (2,)")
    short = (np.uint16, [np.array([1]), np.array([3])])
    _expect(_foreign(tmp_path / "d.h5", **{"spikes/times": t, "spikes/units": short,
                                          "labels": np.zeros(2, np.uint16)}),
            "'spikes/units'", "sample 0")
    wide = (np.uint16, [np.array([1, 700]), np.array([3])])
    _expect(_foreign(tmp_path / "e.h5", **{"spikes/times": t, "spikes/units": wide,
                                          "labels": np.zeros(2, np.uint16)}),
            "'spikes/units'", "unit 700")
    neg = (np.float16, [np.array([0.1, -0.2]), np.array([np.inf])])
    _expect(_foreign(tmp_path / "f.h5", **{"spikes/times": neg, "spikes/units": u,
                                          "labels": np.zeros(2, np.uint16)}),
            "'spikes/times'", "sample 0")
    _expect(_foreign(tmp_path / "g.h5", **{"spikes/times": t, "spikes/units": u,
                                          "labels": np.array([0, 2], np.uint16),
                                          "extra/keys": np.array([b"a", b"b"])}),
            "'labels'", "2 classes")
    # optional datasets absent: speakers -1, class names from the labels
    data = F.read_shd(_foreign(tmp_path / "h.h5", **{"spikes/times": t, "spikes/units": u,
                                                    "labels": np.array([0, 2], np.uint16)}))
    assert data.class_names == ("class-0", "class-1", "class-2")
    np.testing.assert_array_equal(data.speakers, [-1, -1])


def test_find_split_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        F.find_split_files(tmp_path / "missing")
    assert F.find_split_files(tmp_path) == {"train": None, "test": None}
    (tmp_path / "fsdd_shd_train.h5").write_bytes(b"")
    assert F.find_split_files(tmp_path) == {"train": tmp_path / "fsdd_shd_train.h5",
                                            "test": None}
    (tmp_path / "shd_test.h5.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "shd_train.h5.zip").write_bytes(b"")
    assert F.find_split_files(tmp_path) == {"train": tmp_path / "shd_train.h5.zip",
                                            "test": tmp_path / "shd_test.h5.gz"}
    os.remove(tmp_path / "shd_train.h5.zip")
    (tmp_path / "other_train.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="several train files"):
        F.find_split_files(tmp_path)


def test_real_fsdd_file():
    path = require_shared("data", "spoken_digits", "fsdd_shd_train.h5")
    data = F.read_shd(path)
    # numbers from ../shared/data/spoken_digits/README.md
    assert len(data) == 2000 and data.num_classes == 10
    assert data.class_names[0] == "english-zero" and data.class_names[9] == "english-nine"
    np.testing.assert_array_equal(np.bincount(data.labels), [200] * 10)
    np.testing.assert_array_equal(np.bincount(data.speakers), [500] * 4)
    counts = data.spike_counts
    assert counts.min() == 469 and counts.max() == 8765
    assert int(data.units.max()) == 699 and int(data.units.min()) == 0
    late = np.add.reduceat(data.times >= 1.0, data.offsets[:-1])
    assert int((late > 0).sum()) == 16
    assert data.meta_info["gender"].shape == (6,)

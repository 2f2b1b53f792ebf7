"""The ``shd`` TFDS builder on fixture files in the exact layout, without TensorFlow:
build (array_record) into a temporary data_dir, read back by random access, equal to
the direct HDF5 reader; the samplers batch it identically."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from elm_jax.tasks.spoken_digits import formats as F
from elm_jax.tasks.spoken_digits import preprocess as P
from elm_jax.tasks.spoken_digits import synthetic as S
from elm_jax.tasks.spoken_digits import tfds_builder as T


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("shd_tfds")
    manual = root / "manual"
    # the official names, compressed as distributed (.gz) and as tonic has them (.zip)
    train = S.write_synthetic(manual / "shd_train.h5.gz", 14, num_speakers=3, seed=1)
    test = S.write_synthetic(manual / "shd_test.h5.zip", 6, num_speakers=4, seed=2,
                             first_index=50)
    builder = T.prepare_shd(manual, root / "data")
    return builder, root, {"train": train, "test": test}


def test_build_and_read_back_equal_to_hdf5(built):
    builder, root, files = built
    assert "tensorflow" not in sys.modules          # built and read without TensorFlow
    sources = builder.as_data_source()
    assert set(sources) == {"train", "test"}
    version_dir = root / "data" / "shd" / "1.0.0"
    assert (version_dir / "shd-train.array_record-00000-of-00001").is_file()
    names = builder.info.features["label"].names
    for split, path in files.items():
        direct = F.read_shd(path, cache_dir=root / "cache")
        assert len(sources[split]) == len(direct)
        assert tuple(names) == direct.class_names
        for i in range(len(direct)):
            rec = sources[split][i]                 # record i is sample i (no shuffling)
            t, u = direct.sample(i)
            assert rec["index"] == i and rec["label"] == direct.labels[i]
            assert rec["speaker"] == direct.speakers[i]
            assert rec["times"].dtype == np.float32 and rec["units"].dtype == np.uint16
            np.testing.assert_array_equal(rec["times"], t)
            np.testing.assert_array_equal(rec["units"], u)
    assert builder.info.metadata["source_files"] == {"train": "shd_train.h5.gz",
                                                     "test": "shd_test.h5.zip"}
    assert "tensorflow" not in sys.modules


def test_tfds_source_batches_like_the_hdf5_dataset(built):
    _, root, files = built
    src = T.TfdsSpikeSource("train", root / "data")
    direct = F.read_shd(files["train"], cache_dir=root / "cache")
    np.testing.assert_array_equal(src.labels, direct.labels)
    np.testing.assert_array_equal(src.speakers, direct.speakers)
    assert src.class_names == direct.class_names and len(src) == 14
    sliced = T.TfdsSpikeSource("train[:50%]", root / "data")
    np.testing.assert_array_equal(sliced.labels, direct.labels[:7])
    train, _val = P.validation_split(src, 0.3, seed=0)
    for fmt in P.INPUT_FORMATS:
        for cls, kw in ((P.EpochSampler, {}), (P.AddingSampler, {"num_batches": 2})):
            a = cls(src, train, batch_size=4, bin_ms=5, seed=1, dropout=0.5,
                    input_format=fmt, **kw)
            b = cls(direct, train, batch_size=4, bin_ms=5, seed=1, dropout=0.5,
                    input_format=fmt, **kw)
            x, y = a.batch(1, 1), b.batch(1, 1)
            dense = (lambda v: np.asarray(v.to_dense())) if fmt == "events" else np.asarray
            np.testing.assert_array_equal(dense(x["x"]), dense(y["x"]))
            np.testing.assert_array_equal(x["y"], y["y"])
    assert "tensorflow" not in sys.modules


def test_manual_dir_without_train_file_says_where(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "readme.txt").write_text("nothing here")
    with pytest.raises(Exception, match="zenkelab") as err:
        T.prepare_shd(tmp_path / "manual", tmp_path / "data")
    assert "shd_train.h5" in str(err.value)

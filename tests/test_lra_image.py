"""LRA Image (CIFAR-10 grey): the raw CIFAR-10 layouts (python and binary, archive and
unpacked, generated fixture -> reader round trip, plane order against hand-built
records), the grey formulas (against Pillow and a float64 formula), the seeded split,
strict and safe reading (truncated .bin, corrupt archive, forbidden pickle global,
missing batch, bad labels/shape) and the ``lra_image`` TFDS builder without
TensorFlow."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import sys
import tarfile

import numpy as np
import pytest

from elm_jax.tasks.lra import image as IM
from elm_jax.tasks.lra import pathfinder as PF

N_TRAIN, N_TEST = 30, 12


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    out = {}
    for fmt in ("python", "binary"):
        for arch in (True, False):
            out[fmt, arch] = IM.write_cifar_fixture(root / f"{fmt}_{arch}", N_TRAIN, N_TEST,
                                                    seed=1, fmt=fmt, as_archive=arch)
    return root, out


def _equal(a, b):
    for s in ("train", "test"):
        np.testing.assert_array_equal(a[s].images, b[s].images)
        np.testing.assert_array_equal(a[s].labels, b[s].labels)


def test_fixture_layouts_read_identically(fixtures, tmp_path):
    root, out = fixtures
    assert out["python", True].name == "cifar-10-python.tar.gz"
    assert out["binary", True].name == "cifar-10-binary.tar.gz"
    with tarfile.open(out["python", True]) as tar:
        names = set(tar.getnames())
    assert names == {"cifar-10-batches-py"} | {
        f"cifar-10-batches-py/{n}" for n in
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
         "test_batch", "batches.meta", "readme.html")}
    assert sorted(p.name for p in out["binary", False].iterdir()) == sorted(
        [f"data_batch_{i}.bin" for i in range(1, 6)]
        + ["test_batch.bin", "batches.meta.txt", "readme.html"])
    assert (out["binary", False] / "batches.meta.txt").read_text().split() == \
        list(IM.CLASS_NAMES)
    # pickles as Python 2 wrote them: str opcodes, NumPy 1 reconstructor name
    raw = (out["python", False] / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"_codecs" not in raw
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    meta = IM._unpickle((out["python", False] / "batches.meta").read_bytes(), "meta")
    assert meta[b"label_names"] == [c.encode() for c in IM.CLASS_NAMES]
    batch = IM._unpickle(raw, "b1")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (6, 3072) and len(batch[b"labels"]) == 6

    ref = IM.read_cifar10(out["python", True])
    assert ref["train"].images.shape == (N_TRAIN, 32, 32, 3)
    assert ref["test"].images.shape == (N_TEST, 32, 32, 3)
    assert ref["train"].images.dtype == np.uint8 and ref["train"].labels.dtype == np.int64
    assert len(ref["train"]) == N_TRAIN and len(ref["test"]) == N_TEST
    assert set(np.unique(ref["train"].labels)) <= set(range(10))
    for path in out.values():
        _equal(ref, IM.read_cifar10(path))                 # archive / unpacked folder
        _equal(ref, IM.read_cifar10(path.parent))          # the folder holding it
    # same seed -> same bytes
    again = IM.write_cifar_fixture(tmp_path, N_TRAIN, N_TEST, seed=1, fmt="python")
    assert again.read_bytes() == out["python", True].read_bytes()
    assert not list(root.rglob(".*.tmp"))


def _record(label, planes):
    return bytes([label]) + planes.tobytes()


def test_plane_order_against_hand_built_records(fixtures, tmp_path):
    _, out = fixtures
    planes = np.zeros((3, 32, 32), np.uint8)               # channel-major, as the spec
    planes[0, 2, 5] = 255                                  # a red pixel at row 2, col 5
    planes[1, 3, 4] = 200                                  # green at row 3, col 4
    planes[2, 31, 0] = 100                                 # blue at row 31, col 0
    expect = np.zeros((32, 32, 3), np.uint8)
    expect[2, 5], expect[3, 4], expect[31, 0] = (255, 0, 0), (0, 200, 0), (0, 0, 100)

    folder = tmp_path / "cifar-10-batches-bin"
    shutil.copytree(out["binary", False], folder)
    (folder / "test_batch.bin").write_bytes(_record(7, planes) + _record(3, planes * 0))
    test = IM.read_cifar10(folder)["test"]
    assert test.labels.tolist() == [7, 3]
    np.testing.assert_array_equal(test.images[0], expect)

    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(out["python", False], folder)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [7],
             b"data": planes.reshape(1, 3072), b"filenames": [b"x.png"]}
    # a protocol-2 pickle written by Python 3 (bytes via _codecs.encode) reads too
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    test = IM.read_cifar10(folder)["test"]
    assert test.labels.tolist() == [7]
    np.testing.assert_array_equal(test.images[0], expect)

    # the writer's binary records: label byte, then R, G, B planes
    raw = (out["binary", False] / "test_batch.bin").read_bytes()
    ref = IM.read_cifar10(out["binary", False])["test"]
    assert raw[0] == ref.labels[0]
    np.testing.assert_array_equal(np.frombuffer(raw[1:1025], np.uint8),
                                  ref.images[0, :, :, 0].ravel())
    np.testing.assert_array_equal(np.frombuffer(raw[3073 + 2049:3073 + 3073], np.uint8),
                                  ref.images[1, :, :, 2].ravel())


def test_to_grey_pil_and_tf():
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    rgb[0, 0, :3] = [[255, 255, 255], [0, 0, 0], [255, 0, 0]]
    grey = IM.to_grey(rgb)
    assert grey.shape == (20, 32, 32) and grey.dtype == np.uint8
    pil = np.stack([np.asarray(Image.fromarray(im, "RGB").convert("L")) for im in rgb])
    np.testing.assert_array_equal(grey, pil)
    assert grey[0, 0, :3].tolist() == [255, 0, 76]
    assert IM.GREY_FORMULAS == ("pil", "tf")

    tf = IM.to_grey(rgb, formula="tf")
    assert tf.shape == grey.shape and tf.dtype == np.uint8
    assert (tf != grey).any() and np.abs(tf.astype(int) - grey).max() == 1
    x = rgb.astype(np.float64)
    v = 255.5 * (0.2989 * x[..., 0] + 0.5870 * x[..., 1] + 0.1140 * x[..., 2]) / 255.0
    safe = np.abs(v - np.rint(v)) > 1e-4       # float32 may round either way at a tie
    assert safe.mean() > 0.99
    np.testing.assert_array_equal(tf[safe], np.floor(v[safe]).astype(np.uint8))
    assert tf[0, 0, :3].tolist() == [255, 0, 76]
    with pytest.raises(ValueError, match="formula"):
        IM.to_grey(rgb, formula="luma")
    with pytest.raises(ValueError, match="uint8"):
        IM.to_grey(rgb.astype(np.float32))


def test_split_and_arrays(fixtures):
    _, out = fixtures
    train, val = IM.split_train_val()
    assert len(train) == 45_000 and len(val) == 5_000
    assert train.dtype == np.int64 and np.all(np.diff(train) > 0)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(50_000))
    t2, v2 = IM.split_train_val(50_000, 5_000, 42)
    assert np.array_equal(train, t2) and np.array_equal(val, v2)
    assert not np.array_equal(val, IM.split_train_val(seed=7)[1])
    with pytest.raises(ValueError):
        IM.split_train_val(10, 11)

    raw = IM.read_cifar10(out["binary", True])
    arrays = IM.CifarArrays.read(out["binary", True])
    assert {s: len(arrays.split(s)) for s in IM.SPLITS} == \
        {"train": 27, "validation": 3, "test": N_TEST}
    tr, va = IM.split_train_val(N_TRAIN, 3, 42)
    assert np.array_equal(arrays.indices["train"], tr)
    assert np.array_equal(arrays.indices["validation"], va)
    x, y = arrays.split("validation").batch([2, 0])
    assert x.shape == (2, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x, IM.to_grey(raw["train"].images[va[[2, 0]]]))
    np.testing.assert_array_equal(y, raw["train"].labels[va[[2, 0]]])
    q = PF.quantize(arrays.split("test").images, IM.LEVELS)
    assert q.shape == (N_TEST, IM.STEPS) and q.max() < 16
    tfa = IM.CifarArrays.read(out["binary", True], formula="tf", split_seed=3)
    assert tfa.formula == "tf" and not np.array_equal(tfa.indices["validation"], va)
    with pytest.raises(KeyError):
        arrays.split("val")


def test_fixture_classes_learnable_from_grey(tmp_path):
    path = IM.write_cifar_fixture(tmp_path, 200, 100, seed=2, fmt="binary")
    arrays = IM.CifarArrays.read(path, num_val=0)
    feats = {}
    for s in ("train", "test"):
        grey = arrays.split(s).images.astype(np.float64)
        spec = np.abs(np.fft.fft2(grey - grey.mean((1, 2), keepdims=True)))
        feats[s] = spec.reshape(len(grey), -1) / np.linalg.norm(
            spec.reshape(len(grey), -1), axis=1, keepdims=True)
    ytr, yte = arrays.split("train").labels, arrays.split("test").labels
    centroids = np.stack([feats["train"][ytr == c].mean(0) for c in range(10)])
    pred = np.argmax(feats["test"] @ centroids.T, 1)
    assert np.mean(pred == yte) > 0.8                      # nearest class centroid


def test_format_errors(fixtures, tmp_path):
    _, out = fixtures
    bin_dir = tmp_path / "b" / "cifar-10-batches-bin"
    shutil.copytree(out["binary", False], bin_dir)
    path = bin_dir / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IM.CifarFormatError, match=r"data_batch_3\.bin.*multiple of"):
        IM.read_cifar10(bin_dir)
    rec = bytearray((bin_dir / "data_batch_1.bin").read_bytes())
    rec[3073] = 10                                         # second record's label
    path.write_bytes(bytes(rec))
    with pytest.raises(IM.CifarFormatError, match=r"data_batch_3\.bin: label 10"):
        IM.read_cifar10(bin_dir)
    (bin_dir / "test_batch.bin").unlink()
    with pytest.raises(IM.CifarFormatError, match="missing.*test_batch.bin"):
        IM.read_cifar10(bin_dir)

    good = out["python", True].read_bytes()
    bad = tmp_path / "c" / "cifar-10-python.tar.gz"
    bad.parent.mkdir()
    for data in (good[:len(good) // 2], b"\x1f\x8b" + os.urandom(2000), b"not an archive"):
        bad.write_bytes(data)
        with pytest.raises(IM.CifarFormatError, match="cifar-10-python.tar.gz"):
            IM.read_cifar10(bad.parent)
    buf = io.BytesIO()                                     # a tar without CIFAR batches
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("other.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    bad.write_bytes(buf.getvalue())
    with pytest.raises(IM.CifarFormatError, match="no CIFAR-10 batches"):
        IM.read_cifar10(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IM.CifarFormatError, match="empty: no CIFAR-10 data"):
        IM.read_cifar10(tmp_path / "empty")
    with pytest.raises(IM.CifarFormatError, match="no such"):
        IM.read_cifar10(tmp_path / "missing")

    py_dir = tmp_path / "p" / "cifar-10-batches-py"
    shutil.copytree(out["python", False], py_dir)
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (py_dir / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(IM.CifarFormatError, match=r"test_batch.*(posix|os)\.system"):
        IM.read_cifar10(py_dir)
    assert not marker.exists()
    (py_dir / "test_batch").write_bytes(pickle.dumps(
        {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(IM.CifarFormatError, match=r"test_batch.*\(n, 3072\)"):
        IM.read_cifar10(py_dir)
    (py_dir / "test_batch").write_bytes(pickle.dumps(
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2))
    with pytest.raises(IM.CifarFormatError, match="test_batch: 1 labels for 2"):
        IM.read_cifar10(py_dir)
    (py_dir / "data_batch_2").unlink()
    with pytest.raises(IM.CifarFormatError, match="missing.*data_batch_2"):
        IM.read_cifar10(py_dir)


def test_builder_without_tensorflow(fixtures, tmp_path):
    _, out = fixtures
    builder = IM.prepare_image(out["python", True].parent, tmp_path / "data")
    assert "tensorflow" not in sys.modules
    assert builder.builder_config.name == "pil"
    assert builder.info.metadata["split_seed"] == 42
    assert builder.info.features["label"].names == list(IM.CLASS_NAMES)
    assert {s: builder.info.splits[s].num_examples for s in IM.SPLITS} == \
        {"train": 27, "validation": 3, "test": N_TEST}
    arrays = IM.CifarArrays.read(out["python", True])
    for split in IM.SPLITS:
        src = IM.ImageSource(builder, split)
        ref = arrays.split(split)
        assert len(src) == len(ref)
        idx = np.arange(len(src))[::-1]
        x, y = src.batch(idx)
        xr, yr = ref.batch(idx)
        assert x.dtype == np.uint8 and x.shape == (len(src), 32, 32) and y.dtype == np.int32
        np.testing.assert_array_equal(x, xr)
        np.testing.assert_array_equal(y, yr)
        index = [r["index"] for r in src.source.__getitems__(list(range(len(src))))]
        np.testing.assert_array_equal(index, arrays.indices[split])
    with pytest.raises(ValueError, match="split_seed 42"):
        IM.prepare_image(out["python", True].parent, tmp_path / "data", split_seed=5)

    tf_builder = IM.prepare_image(out["binary", False], tmp_path / "data", split_seed=5,
                                  formula="tf")
    tfa = IM.CifarArrays.read(out["binary", False], split_seed=5, formula="tf")
    x, y = IM.ImageSource(tf_builder, "validation").batch([0, 1, 2])
    np.testing.assert_array_equal(x, tfa.split("validation").images)
    np.testing.assert_array_equal(y, tfa.split("validation").labels)
    assert "tensorflow" not in sys.modules

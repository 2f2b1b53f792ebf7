"""Pathfinder: the generator (determinism, labels as connectivity, value range), the
official file layout (write -> read round trip in both metadata formats, empty image,
malformed metadata), quantisation, and the ``pathfinder`` TFDS builder without
TensorFlow (from fixture files in the exact layout and from generation)."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from scipy import ndimage

from elm_jax.tasks.lra import pathfinder as PF


def test_constants():
    assert PF.RESOLUTIONS == (32, 64, 128, 256)
    assert PF.DIFFICULTIES == {"easy": "curv_baseline",
                               "intermediate": "curv_contour_length_9",
                               "hard": "curv_contour_length_14"}
    assert PF.CONTOUR_LENGTHS == {"easy": 6, "intermediate": 9, "hard": 14}
    p = PF.GENERATOR_PARAMS[32]
    assert (p.paddle_length, p.paddle_thickness, p.seed_distance, p.marker_radius) == \
        (2, 0.5, 7, 1.5)
    assert set(PF.GENERATOR_PARAMS) == set(PF.RESOLUTIONS)
    with pytest.raises(Exception):
        p.padding = 3                                      # frozen


def test_generator_deterministic_and_full_range():
    a = PF.generate_image(np.random.default_rng(5), 32, 14)
    b = PF.generate_image(5, 32, 14)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    c = PF.generate_image(6, 32, 14)
    assert not np.array_equal(a[0], c[0])
    for res, cl in ((32, 6), (64, 9)):
        img, label = PF.generate_image(1, res, cl)
        assert img.shape == (res, res) and img.dtype == np.uint8
        assert img.min() == 0 and img.max() == 255 and label in (0, 1)


def test_labels_are_connectivity_of_the_drawn_snakes():
    rng = np.random.default_rng(11)
    labels = []
    for res, cl, n in ((32, 14, 60), (32, 6, 30), (64, 6, 6), (128, 9, 2)):
        for _ in range(n):
            img, label, m = PF.generate_image(rng, res, cl, return_masks=True)
            s = res * PF.GENERATOR_PARAMS[res].antialias_scale
            assert m["skeleton"].shape == (s, s) and m["strokes"].dtype == bool
            assert not (m["strokes"] & ~m["skeleton"]).any()
            comp, _ = ndimage.label(m["skeleton"], structure=np.ones((3, 3)))
            (y0, x0), (y1, x1) = m["tips"]
            assert comp[y0, x0] > 0 and comp[y1, x1] > 0    # markers sit on snake tips
            assert m["markers"][y0, x0] and m["markers"][y1, x1]
            assert (comp[y0, x0] == comp[y1, x1]) == bool(label)
            assert {m["snake_id"][y0, x0], m["snake_id"][y1, x1]} <= {1, 2}
            labels.append(label)
    assert 0.3 < np.mean(labels) < 0.7


def test_label_balance_loose():
    rng = np.random.default_rng(2026)
    labels = [PF.generate_image(rng, 32, 6)[1] for _ in range(200)]
    assert 0.4 <= np.mean(labels) <= 0.6                   # 2,000 images: see the doc


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("pf")
    out = {}
    for fmt in ("text", "npy"):
        folder = PF.generate_pathfinder(root / fmt / "pathfinder32", 32, "hard", 23,
                                        seed=3, images_per_batch=10, metadata_format=fmt)
        out[fmt] = folder
    return root, out


def test_layout_round_trip_both_metadata_formats(generated):
    root, out = generated
    text, npy = out["text"], out["npy"]
    assert text.name == "curv_contour_length_14"
    assert sorted(p.name for p in (text / "metadata").iterdir()) == ["0.npy", "1.npy", "2.npy"]
    assert (text / "imgs" / "2" / "sample_2.png").is_file()
    line = (text / "metadata" / "1.npy").read_text().splitlines()[0].split()
    assert line[:3] == ["imgs/1", "sample_0.png", "0"] and len(line) == 11
    assert line[4:] == ["1", "14", "4", "2", "0.5", "1", "1"]
    assert (npy / "metadata" / "0.npy").read_bytes().startswith(b"\x93NUMPY")
    meta = np.load(npy / "metadata" / "0.npy")
    assert meta.shape == (10, 11) and meta[3, 1] == "sample_3.png"
    a = PF.read_pathfinder(text)
    b = PF.read_pathfinder(root / "npy" / "pathfinder32", "hard")
    assert a.images.shape == (23, 32, 32) and a.images.dtype == np.uint8
    assert a.labels.dtype == np.int32 and a.paths[10] == "imgs/1/sample_0.png"
    np.testing.assert_array_equal(a.images, b.images)      # same seed -> same pixels
    np.testing.assert_array_equal(a.labels, b.labels)
    for i in (0, 13, 22):                                  # pixels = the generator's
        rng = np.random.default_rng(np.random.SeedSequence([3, i]))
        img, label = PF.generate_image(rng, 32, 14)
        np.testing.assert_array_equal(a.images[i], img)
        assert a.labels[i] == label
    assert (text / "imgs/0/sample_4.png").read_bytes() == \
        (npy / "imgs/0/sample_4.png").read_bytes()
    sub = PF.read_pathfinder(text, limit=5)
    np.testing.assert_array_equal(sub.images, a.images[:5])
    assert not list(text.rglob(".*.tmp"))                  # nothing half-written


def test_empty_png_skipped_and_malformed_metadata(generated, tmp_path, caplog):
    import shutil

    _, out = generated
    folder = tmp_path / "pathfinder32" / "curv_baseline"
    shutil.copytree(out["text"], folder)
    (folder / "imgs" / "0" / "sample_7.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        arr = PF.read_pathfinder(folder)
    assert len(arr) == 22 and arr.skipped == 1 and "imgs/0/sample_7.png" not in arr.paths
    assert "skipped 1" in caplog.text
    (folder / "metadata" / "1.npy").write_text("imgs/1 sample_0.png 0 1\nimgs/1 oops\n")
    with pytest.raises(PF.PathfinderFormatError, match=r"1\.npy.*row 2"):
        PF.read_pathfinder(folder)
    with pytest.raises(PF.PathfinderFormatError, match="metadata"):
        PF.read_pathfinder(tmp_path / "pathfinder32")        # no difficulty given
    (folder / "metadata" / "1.npy").unlink()
    (folder / "metadata" / "2.npy").unlink()
    from PIL import Image
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "imgs" / "0" / "sample_3.png")
    with pytest.raises(PF.PathfinderFormatError, match="sample_3.png"):
        PF.read_pathfinder(folder)


def test_split_quantize_one_hot():
    parts = PF.split_indices(100, seed=42)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [80, 10, 10]
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(100))
    again = PF.split_indices(100, seed=42)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    x = np.array([[[0, 15, 16, 255], [128, 127, 240, 239]]], np.uint8)
    q = PF.quantize(x, 16)
    assert q.shape == (1, 8) and q.dtype == np.uint8
    assert q.tolist() == [[0, 0, 1, 15, 8, 7, 15, 14]]
    assert PF.quantize(x, 8).tolist() == [[0, 0, 0, 7, 4, 3, 7, 7]]
    assert PF.quantize(x, 10).max() == 9
    oh = PF.one_hot(q, 16)
    assert oh.shape == (1, 8, 16) and oh.dtype == np.float32
    assert (oh.sum(-1) == 1).all() and oh[0, 3, 15] == 1


def test_builder_from_official_layout_and_from_generation(generated, tmp_path):
    import shutil

    _, out = generated
    manual = tmp_path / "manual" / "lra_release" / "pathfinder32" / "curv_contour_length_14"
    shutil.copytree(out["npy"], manual)
    (manual / "imgs" / "1" / "sample_2.png").write_bytes(b"")   # as in the release
    builder = PF.prepare_pathfinder(32, "hard", manual_dir=tmp_path / "manual",
                                    data_dir=tmp_path / "data")
    assert "tensorflow" not in sys.modules
    assert len(PF.PathfinderBuilder.BUILDER_CONFIGS) == 12
    assert builder.builder_config.name == "pathfinder32_hard"
    assert builder.info.metadata["source"] == "official"
    assert builder.info.metadata["skipped"] == 1
    arrays = PF.read_pathfinder(manual)
    assert len(arrays) == 22
    total = 0
    for split in ("train", "validation", "test"):
        src = PF.PathfinderSource(builder, split)
        ref = arrays.split(split)
        assert len(src) == len(ref)
        total += len(src)
        np.testing.assert_array_equal(src.labels, ref.labels)
        idx = np.arange(len(src))[::-1]
        xi, yi = src.batch(idx)
        xa, ya = ref.batch(idx)
        assert xi.dtype == np.uint8 and xi.shape == (len(src), 32, 32)
        np.testing.assert_array_equal(xi, xa)
        np.testing.assert_array_equal(yi, ya)
    assert total == 22
    gen = PF.prepare_pathfinder(32, "easy", data_dir=tmp_path / "data2", seed=4,
                                num_images=12)
    assert gen.info.metadata["source"] == "generated"
    assert {s: gen.info.splits[s].num_examples for s in ("train", "validation", "test")} \
        == {"train": 9, "validation": 1, "test": 2}
    src = PF.PathfinderSource(gen, "train")
    x, y = src.batch([0, 1])
    assert x.shape == (2, 32, 32) and set(np.unique(y)) <= {0, 1}
    assert "tensorflow" not in sys.modules


@pytest.mark.slow
def test_label_balance_2000():
    rng = np.random.default_rng(0)
    labels = [PF.generate_image(rng, 32, 6)[1] for _ in range(2000)]
    assert abs(np.mean(labels) - 0.5) <= 0.02


@pytest.mark.slow          # two spawned processes import jax (~5 s)
def test_workers_give_the_same_bytes(generated, tmp_path):
    _, out = generated
    folder = PF.generate_pathfinder(tmp_path / "pathfinder32", 32, "hard", 4, seed=3,
                                    images_per_batch=2, metadata_format="npy", workers=2)
    one = PF.generate_pathfinder(tmp_path / "single", 32, "hard", 4, seed=3,
                                 images_per_batch=2, metadata_format="npy")
    for rel in ("imgs/0/sample_0.png", "imgs/1/sample_1.png", "metadata/1.npy"):
        assert (folder / rel).read_bytes() == (one / rel).read_bytes()
    # batching does not change the pixels either (image n uses SeedSequence([seed, n]))
    np.testing.assert_array_equal(PF.read_pathfinder(folder).images,
                                  PF.read_pathfinder(out["npy"], limit=4).images)

"""Image (Long Range Arena): CIFAR-10 in grey, 1,024 steps -- the raw CIFAR-10 files
(reader and a generated fixture writer), the grey conversion, the seeded train /
validation split, the ``lra_image`` TFDS builder and random-access batch sources.
Data layer only (no training code).

Files (data-formats.md section 3.5), either release of CIFAR-10:

* Python: ``cifar-10-python.tar.gz`` -> ``cifar-10-batches-py/{data_batch_1..5,
  test_batch, batches.meta, readme.html}``.  Each batch is a pickled dict (protocol 2,
  written by Python 2: read with ``encoding="bytes"``, so its keys are bytes) with
  ``b"data"`` (n, 3072) uint8 -- a row is the 32x32 R plane, then G, then B, each row by
  row -- ``b"labels"`` (a list of n ints 0-9), ``b"batch_label"`` and ``b"filenames"``.
* Binary: ``cifar-10-binary.tar.gz`` -> ``cifar-10-batches-bin/{data_batch_1..5.bin,
  test_batch.bin, batches.meta.txt, readme.html}``; records of 3,073 bytes: the label
  byte, then the R, G and B planes (1,024 bytes each, row by row).

`read_cifar10` accepts either archive (read in one streaming pass, nothing extracted to
disk), a folder holding one, or the unpacked ``cifar-10-batches-{py,bin}/`` folder (or
the folder holding it).  The pickles are read by a restricted unpickler that admits
only the globals a NumPy array needs (``_reconstruct``, ``ndarray``, ``dtype``, and
``_codecs.encode`` for Latin-1 only, which protocol-2 pickles written by Python 3 use
for bytes); anything else (``os.system``...) is refused before it can run.  Every
problem (not an archive, corrupt, missing batch, wrong shape, a label outside 0-9, a
``.bin`` whose size is not a multiple of 3,073) raises `CifarFormatError` (a
ValueError) naming the file.  `write_cifar_fixture` writes generated, seeded images
in exactly these layouts (a class is a grey stripe orientation, so it is learnable
from grey values).

Grey (`to_grey`): the default ``"pil"`` formula is ITU-R 601-2 luma with Pillow's
integer rounding, ``L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16`` -- exactly
``PIL.Image.convert("L")``, hence torchvision's ``Grayscale`` as used by S4 and Mega.
LRA itself used ``tf.image.rgb_to_grayscale`` (float weights 0.2989 / 0.5870 / 0.1140,
truncating conversion back to uint8), which rounds differently (one grey level off
on about a quarter of all RGB colours); ``formula="tf"`` mimics it (unverified
against TensorFlow, which is not installed here).

Split (`split_train_val`): a seeded random permutation of the 50,000 training images;
its first 5,000 (a tenth) are the validation split, the other 45,000 the training split
(sorted indices; for a smaller fixture set, a tenth of it).  This is the kind of split
Mega/S4 use (seeded 45k / 5k; not their indices, which come from torch's generator);
LRA took the contiguous ``train[:90%]`` / ``train[90%:]``.  The test batch (10,000) is
the test split.

Model input: the ELM paper bins the 256 grey values into 16 levels and one-hot encodes
them, ``pathfinder.quantize(grey, 16)`` (row by row: (n, 32, 32) -> (n, 1024), i.e.
1,024 steps) then ``pathfinder.one_hot``.

TFDS: the ``lra_image`` builder (configs ``pil`` and ``tf``, the grey formula;
array_record; works without TensorFlow) reads either archive or the unpacked folder
from the manual directory and stores ``image`` Tensor (32, 32) uint8 grey (converted
once at build time, a third of the RGB size), ``label`` ClassLabel (`CLASS_NAMES`) and
``index`` (position in the source split: train 0..49,999 in batch order, test
0..9,999).  Splits train / validation / test from `split_train_val` (constructor
argument ``split_seed``, default 42).  `prepare_image` builds it; `ImageSource` reads
a prepared split; `CifarArrays` has the same ``batch`` API straight from the raw files.
``ImageBuilder`` is defined on first use, so importing this module does not import
tensorflow_datasets.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from ...fileio import atomic_write
from ..tfds_support import (
    ImageLabelSource,
    dataset_info,
    import_tfds,
    lazy_builder_attribute,
    prepare,
)

__all__ = [
    "ARCHIVES", "CLASS_NAMES", "GREY_FORMULAS", "LEVELS", "MANUAL_DOWNLOAD_INSTRUCTIONS",
    "SPLITS", "STEPS", "CifarArrays", "CifarFormatError", "CifarSplit", "ImageSource",
    "prepare_image", "read_cifar10", "split_train_val", "to_grey", "write_cifar_fixture",
]

#: The CIFAR-10 class names, label order (``batches.meta`` / ``batches.meta.txt``).
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck")
#: Grey conversions of `to_grey`; the first is the default.
GREY_FORMULAS = ("pil", "tf")
#: Grey levels of the ELM paper's input (one-hot) and sequence length (32 x 32).
LEVELS = 16
STEPS = 1024
SPLITS = ("train", "validation", "test")
#: Archive name and unpacked folder name per format.
ARCHIVES = {"python": "cifar-10-python.tar.gz", "binary": "cifar-10-binary.tar.gz"}
FOLDERS = {"python": "cifar-10-batches-py", "binary": "cifar-10-batches-bin"}
_BATCHES = {"python": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch"),
            "binary": ([f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin")}
_RECORD = 1 + 3072
_SIDE = 32


class CifarFormatError(ValueError):
    """A CIFAR-10 file could not be read; the message names the file."""


# ----------------------------------------------------------------------------------
# arrays

@dataclasses.dataclass(frozen=True, eq=False)
class CifarSplit:
    """Images and labels of one split.

    Attributes:
      images: (n, 32, 32, 3) uint8 RGB (from `read_cifar10`) or (n, 32, 32) uint8 grey
        (from `CifarArrays.split`).
      labels: (n,) int64 class 0-9 (`CLASS_NAMES`).
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(images (b, 32, 32[, 3]) uint8, labels (b,) int32)`` of `indices`."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        return self.images[idx], self.labels[idx].astype(np.int32)


# ----------------------------------------------------------------------------------
# safe unpickling

def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, Latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, "
                                     f"{encoding!r}) is not allowed")
    return text.encode("latin1")


# The array-reconstruction function of this NumPy (numpy.core.multiarray._reconstruct
# in NumPy 1, numpy._core.multiarray._reconstruct in NumPy 2), taken from a pickle
# reduction so that no deprecated module is imported.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of `_ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR-10 pickle") from None


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote the CIFAR-10 pickles: bytes and (ASCII) str as
    ``BINSTRING`` opcodes (so no ``_codecs.encode`` global) and the array
    reconstructor under its NumPy 1 name ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        head = (pickle.SHORT_BINSTRING + bytes([n]) if n < 256
                else pickle.BINSTRING + struct.pack("<i", n))
        self.write(head + obj)
        self.memoize(obj)

    def _save_str(self, obj: str) -> None:
        self._save_bytes(obj.encode("ascii"))

    dispatch[bytes] = _save_bytes
    dispatch[str] = _save_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _py2_pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _unpickle(data: bytes, where: str) -> Any:
    try:
        return _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # any failure to decode is a format error
        raise CifarFormatError(f"{where}: not a readable CIFAR-10 pickle "
                               f"({type(err).__name__}: {err})") from err


# ----------------------------------------------------------------------------------
# parsing one batch

def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)][0]
        raise CifarFormatError(f"{where}: label {int(bad)} outside 0-9")
    return labels.astype(np.int64)


def _planes_to_hwc(rows: np.ndarray) -> np.ndarray:
    """(n, 3072) R, G, B planes -> (n, 32, 32, 3)."""
    return np.ascontiguousarray(rows.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1))


def _parse_python(data: bytes, where: str) -> CifarSplit:
    batch = _unpickle(data, where)
    if not isinstance(batch, dict):
        raise CifarFormatError(f"{where}: a {type(batch).__name__}, expected a dict")

    def get(key: str) -> Any:
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
        raise CifarFormatError(f"{where}: no {key!r} entry (keys: "
                               f"{sorted(map(repr, batch))})")

    rows, labels = get("data"), get("labels")
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2 \
            or rows.shape[1] != 3072:
        desc = (f"{rows.dtype} array of shape {rows.shape}" if isinstance(rows, np.ndarray)
                else type(rows).__name__)
        raise CifarFormatError(f"{where}: data is a {desc}, expected (n, 3072) uint8")
    try:
        labels = np.asarray(labels, np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise CifarFormatError(f"{where}: labels are not integers ({err})") from err
    if labels.shape[0] != rows.shape[0]:
        raise CifarFormatError(f"{where}: {labels.shape[0]} labels for "
                               f"{rows.shape[0]} images")
    if rows.shape[0] == 0:
        raise CifarFormatError(f"{where}: no images")
    return CifarSplit(_planes_to_hwc(rows), _check_labels(labels, where))


def _parse_binary(data: bytes, where: str) -> CifarSplit:
    if len(data) == 0:
        raise CifarFormatError(f"{where}: empty file")
    if len(data) % _RECORD:
        raise CifarFormatError(
            f"{where}: {len(data)} bytes is not a multiple of the {_RECORD}-byte record "
            f"(1 label byte + 3072 pixel bytes): truncated or not a CIFAR-10 .bin file")
    recs = np.frombuffer(data, np.uint8).reshape(-1, _RECORD)
    return CifarSplit(_planes_to_hwc(recs[:, 1:]), _check_labels(recs[:, 0], where))


# ----------------------------------------------------------------------------------
# locating and reading

def _read_archive(path: Path) -> tuple[str, dict[str, bytes]]:
    """(format, {batch file name: bytes}) of the batch files of a CIFAR-10 archive,
    read in one streaming pass."""
    wanted = {name: fmt for fmt, (train, test) in _BATCHES.items()
              for name in (*train, test)}
    found: dict[str, dict[str, bytes]] = {"python": {}, "binary": {}}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                p = PurePosixPath(member.name)
                fmt = wanted.get(p.name)
                if fmt is None or not member.isfile() or \
                        (len(p.parts) > 1 and p.parent.name != FOLDERS[fmt]):
                    continue
                f = tar.extractfile(member)
                found[fmt][p.name] = f.read() if f is not None else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise CifarFormatError(f"{path}: not a readable CIFAR-10 archive "
                               f"({type(err).__name__}: {err})") from err
    fmt = max(found, key=lambda k: len(found[k]))
    if not found[fmt]:
        raise CifarFormatError(
            f"{path}: no CIFAR-10 batches in the archive (expected "
            f"{FOLDERS['python']}/data_batch_1... or {FOLDERS['binary']}/data_batch_1.bin...)")
    return fmt, found[fmt]


def _parse_all(fmt: str, files: dict[str, bytes], where: Path) -> dict[str, CifarSplit]:
    train_names, test_name = _BATCHES[fmt]
    missing = [n for n in (*train_names, test_name) if n not in files]
    if missing:
        raise CifarFormatError(f"{where}: missing CIFAR-10 batch file(s) {missing}")
    parse = _parse_python if fmt == "python" else _parse_binary
    parts = [parse(files[n], f"{where}/{n}" if where.is_dir() else f"{where}:{n}")
             for n in train_names]
    train = CifarSplit(np.concatenate([p.images for p in parts]),
                       np.concatenate([p.labels for p in parts]))
    test = parse(files[test_name],
                 f"{where}/{test_name}" if where.is_dir() else f"{where}:{test_name}")
    return {"train": train, "test": test}


def _locate(path: Path) -> tuple[str, str, Path]:
    """("archive" | "folder", format, path) of the CIFAR-10 data at or below `path`."""
    if path.is_file():
        return "archive", "", path
    if not path.is_dir():
        raise CifarFormatError(f"{path}: no such file or folder")
    for fmt, folder in FOLDERS.items():
        if path.name == folder:
            return "folder", fmt, path
    for fmt, folder in FOLDERS.items():
        if (path / folder).is_dir():
            return "folder", fmt, path / folder
    for fmt, name in ARCHIVES.items():
        if (path / name).is_file():
            return "archive", fmt, path / name
    raise CifarFormatError(
        f"{path}: no CIFAR-10 data (expected {ARCHIVES['python']}, {ARCHIVES['binary']}, "
        f"or an unpacked {FOLDERS['python']}/ or {FOLDERS['binary']}/ folder)")


def read_cifar10(path: str | os.PathLike) -> dict[str, CifarSplit]:
    """Read CIFAR-10 from the official files (see the module doc).

    Args:
      path: ``cifar-10-python.tar.gz`` or ``cifar-10-binary.tar.gz`` (any tar archive
        holding one of the two layouts), a folder holding either archive, or an unpacked
        ``cifar-10-batches-py/`` or ``cifar-10-batches-bin/`` folder (or its parent).
    Returns ``{"train": CifarSplit, "test": CifarSplit}``: images (n, 32, 32, 3) uint8
      RGB, labels (n,) int64 0-9; train is ``data_batch_1..5`` in order (50,000 in the
      real set), test ``test_batch`` (10,000).
    Raises `CifarFormatError` naming the file on any problem.
    """
    kind, fmt, where = _locate(Path(path).expanduser())
    if kind == "archive":
        fmt, files = _read_archive(where)
        return _parse_all(fmt, files, where)
    train_names, test_name = _BATCHES[fmt]
    files = {}
    for name in (*train_names, test_name):
        if (where / name).is_file():
            try:
                files[name] = (where / name).read_bytes()
            except OSError as err:
                raise CifarFormatError(f"{where / name}: cannot read ({err})") from err
    return _parse_all(fmt, files, where)


# ----------------------------------------------------------------------------------
# grey, split, arrays

def to_grey(images: np.ndarray, formula: str = "pil") -> np.ndarray:
    """RGB -> grey: (n, 32, 32, 3) uint8 -> (n, 32, 32) uint8 (any leading shape with a
    last axis of 3 works).

    ``formula="pil"`` (default): ITU-R 601-2 luma with Pillow's integer arithmetic,
    ``L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`` -- bit-exact with
    ``PIL.Image.fromarray(rgb).convert("L")`` (tested) and so with torchvision's
    ``Grayscale``, which S4 and Mega use.

    ``formula="tf"``: a reproduction of LRA's ``tf.image.rgb_to_grayscale`` on uint8
    images, which rounds differently: the image is converted to float32 (``x / 255``),
    weighted by 0.2989 / 0.5870 / 0.1140 in float32, and converted back as
    ``tf.image.convert_image_dtype`` does (multiply by 255.5 and truncate).  It differs
    from ``"pil"`` by one grey level on about a quarter of all RGB colours.
    TensorFlow is not installed here, so this reproduction is unverified against it
    (float32 summation order included).
    """
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"to_grey expects uint8 images (..., 3), got {x.dtype} {x.shape}")
    if formula == "pil":
        r, g, b = (x[..., c].astype(np.uint32) for c in range(3))
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)
    if formula == "tf":
        f = x.astype(np.float32) * np.float32(1.0 / 255.0)
        w = np.array([0.2989, 0.5870, 0.1140], np.float32)
        grey = f[..., 0] * w[0] + f[..., 1] * w[1] + f[..., 2] * w[2]
        return (grey * np.float32(255.5)).astype(np.uint8)
    raise ValueError(f"formula must be one of {GREY_FORMULAS}, got {formula!r}")


def split_train_val(n_train: int = 50_000, num_val: int = 5_000, seed: int = 42
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of the training batches: ``(train_idx, val_idx)``, sorted int64.

    ``perm = np.random.default_rng(seed).permutation(n_train)``; validation is
    ``perm[:num_val]``, train the rest (45,000 / 5,000 for the real set).  A random
    split as Mega/S4 (LRA used the contiguous ``train[:90%]`` / ``train[90%:]``); the
    test batch is the test split.
    """
    if not 0 <= num_val <= n_train:
        raise ValueError(f"num_val must be in [0, n_train={n_train}], got {num_val}")
    perm = np.random.default_rng(seed).permutation(n_train)
    return (np.sort(perm[num_val:]).astype(np.int64),
            np.sort(perm[:num_val]).astype(np.int64))


def _split_parts(raw: dict[str, CifarSplit], split_seed: int, num_val: int | None
                 ) -> dict[str, tuple[CifarSplit, np.ndarray]]:
    """split name -> (source split, indices into it)."""
    n = len(raw["train"])
    train_idx, val_idx = split_train_val(n, n // 10 if num_val is None else num_val,
                                         split_seed)
    return {"train": (raw["train"], train_idx), "validation": (raw["train"], val_idx),
            "test": (raw["test"], np.arange(len(raw["test"]), dtype=np.int64))}


@dataclasses.dataclass(frozen=True, eq=False)
class CifarArrays:
    """The three LRA Image splits in grey, in memory.

    Attributes:
      splits: ``{"train", "validation", "test"}`` -> `CifarSplit` with images
        (n, 32, 32) uint8 grey and labels (n,) int64.
      indices: the same keys -> (n,) int64 position of each image in its source split
        (train and validation index the 50,000 training images, test the test batch).
      formula: the `to_grey` formula used.
      split_seed: the `split_train_val` seed.
    """

    splits: dict[str, CifarSplit]
    indices: dict[str, np.ndarray]
    formula: str = "pil"
    split_seed: int = 42

    @classmethod
    def from_splits(cls, raw: dict[str, CifarSplit], *, split_seed: int = 42,
                    num_val: int | None = None, formula: str = "pil") -> CifarArrays:
        """From `read_cifar10`'s output; validation = `num_val` training images (None:
        a tenth, 5,000 of 50,000) chosen by `split_train_val`."""
        splits, indices = {}, {}
        for name, (src, idx) in _split_parts(raw, split_seed, num_val).items():
            splits[name] = CifarSplit(to_grey(src.images[idx], formula), src.labels[idx])
            indices[name] = idx
        return cls(splits, indices, formula, int(split_seed))

    @classmethod
    def read(cls, path: str | os.PathLike, *, split_seed: int = 42,
             num_val: int | None = None, formula: str = "pil") -> CifarArrays:
        """`read_cifar10` then `from_splits`."""
        return cls.from_splits(read_cifar10(path), split_seed=split_seed,
                               num_val=num_val, formula=formula)

    def split(self, name: str) -> CifarSplit:
        """The split `name`: ``len()`` and ``batch(indices) -> (grey (b, 32, 32) uint8,
        labels (b,) int32)`` (what the TFDS builder stores as that split)."""
        if name not in self.splits:
            raise KeyError(f"unknown split {name!r}; use one of {SPLITS}")
        return self.splits[name]


# ----------------------------------------------------------------------------------
# fixture writer

def _fixture_images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) uint8: class c = grey stripes at angle 18 c degrees (3 cycles per
    image, random phase), a random colour tint and pixel noise."""
    n = len(labels)
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float64) / _SIDE
    theta = np.pi * labels.astype(np.float64) / 10.0
    phase = rng.uniform(0, 2 * np.pi, n)
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    base = 128 + 90 * np.sin(2 * np.pi * 3 * proj + phase[:, None, None])
    tint = rng.uniform(-25, 25, (n, 1, 1, 3))
    noise = rng.normal(0, 10, (n, _SIDE, _SIDE, 3))
    return np.clip(np.rint(base[..., None] + tint + noise), 0, 255).astype(np.uint8)


_README = (b"<html><body><p>Generated CIFAR-10 fixture (elm_jax.tasks.lra.image."
           b"write_cifar_fixture): seeded synthetic images in the official layout, "
           b"not the real data set.</p></body></html>\n")


def _fixture_files(fmt: str, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]
                   ) -> dict[str, bytes]:
    """{file name: bytes} of one layout."""
    train_names, test_name = _BATCHES[fmt]
    batches = list(zip(train_names, np.array_split(np.arange(len(labels["train"])), 5),
                       strict=True))
    files: dict[str, bytes] = {}
    jobs = [(name, "train", idx, f"training batch {b + 1} of 5")
            for b, (name, idx) in enumerate(batches)]
    jobs.append((test_name, "test", np.arange(len(labels["test"])), "testing batch 1 of 1"))
    for name, split, idx, batch_label in jobs:
        imgs, labs = images[split][idx], labels[split][idx]
        rows = imgs.transpose(0, 3, 1, 2).reshape(len(idx), 3072)
        if fmt == "python":
            batch = {b"batch_label": batch_label.encode(),
                     b"labels": [int(v) for v in labs],
                     b"data": np.ascontiguousarray(rows),
                     b"filenames": [f"fixture_{split}_{int(i):05d}.png".encode() for i in idx]}
            files[name] = _py2_pickle(batch)
        else:
            files[name] = np.concatenate([labs.astype(np.uint8)[:, None], rows], 1).tobytes()
    if fmt == "python":
        files["batches.meta"] = _py2_pickle(
            {b"num_cases_per_batch": 10000, b"num_vis": 3072,
             b"label_names": [c.encode() for c in CLASS_NAMES]})
    else:
        files["batches.meta.txt"] = ("\n".join(CLASS_NAMES) + "\n\n").encode()
    files["readme.html"] = _README
    return files


def write_cifar_fixture(path: str | os.PathLike, num_train: int, num_test: int,
                        seed: int = 0, *, fmt: str = "python", as_archive: bool = True
                        ) -> Path:
    """Write generated CIFAR-10 files in the official layout (module doc) under `path`.

    Images: label ``c`` is uniform over 0-9; the image is grey stripes at angle
    ``18 c`` degrees (random phase) with a random colour tint and pixel noise, so the
    class is learnable from grey values.  Seeded (same seed -> same bytes, the gzip
    and tar headers carry no time).  `num_train` images are spread over the five
    training batches (``np.array_split``; at least 5), `num_test` (>= 1) go to the test
    batch.  `fmt`: ``"python"`` (pickles as Python 2 wrote them: protocol 2, bytes
    keys, ``numpy.core.multiarray._reconstruct``) or ``"binary"``.
    Returns ``path/cifar-10-{python,binary}.tar.gz`` when `as_archive`, else the
    unpacked ``path/cifar-10-batches-{py,bin}/`` folder.  Every file is written
    atomically.
    """
    if fmt not in ARCHIVES:
        raise ValueError(f"fmt must be one of {sorted(ARCHIVES)}, got {fmt!r}")
    if num_train < 5 or num_test < 1:
        raise ValueError(f"need num_train >= 5 and num_test >= 1, got {num_train}, {num_test}")
    rng = np.random.default_rng(seed)
    labels = {"train": rng.integers(0, 10, num_train), "test": rng.integers(0, 10, num_test)}
    images = {s: _fixture_images(rng, labels[s]) for s in ("train", "test")}
    files = _fixture_files(fmt, images, labels)
    folder = FOLDERS[fmt]
    root = Path(path)
    if not as_archive:
        for name, data in files.items():
            atomic_write(root / folder / name, lambda f, d=data: f.write(d))
        return root / folder

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        entries = [(folder, None)] + [(f"{folder}/{n}", d) for n, d in sorted(files.items())]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    archive = root / ARCHIVES[fmt]
    data = buf.getvalue()
    atomic_write(archive, lambda f: f.write(data))
    return archive


# ----------------------------------------------------------------------------------
# TFDS

NAME = "lra_image"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download CIFAR-10 from https://www.cs.toronto.edu/~kriz/cifar.html: either
cifar-10-python.tar.gz or cifar-10-binary.tar.gz (TFDS's own cifar10 builder uses the
binary one).  Put the archive (or its unpacked cifar-10-batches-py/ or
cifar-10-batches-bin/ folder) in the manual directory.  The manual directory is
<data_dir>/downloads/manual/ by default (data_dir defaults to ~/tensorflow_datasets);
pass --manual_dir DIR to `tfds build` or
download_config=tfds.download.DownloadConfig(manual_dir=DIR).
"""


def _builder_class():
    """Define (once) and return the ``lra_image`` builder class (tfds imported lazily)."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    tfds = import_tfds()

    class ImageConfig(tfds.core.BuilderConfig):
        """One grey formula (`GREY_FORMULAS`)."""

        def __init__(self, *, formula: str, **kwargs: Any):
            super().__init__(**kwargs)
            self.formula = formula

    class ImageBuilder(tfds.core.GeneratorBasedBuilder):
        """TFDS builder ``lra_image``: CIFAR-10 in grey (LRA Image), from the manual dir."""

        name = NAME
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {
            "1.0.0": "CIFAR-10 grey (32, 32) uint8, label, index; seeded 45k/5k/10k."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
        BUILDER_CONFIGS: ClassVar[list] = [
            ImageConfig(name="pil", formula="pil",
                        description="grey = PIL convert('L') (ITU-R 601-2, integer)"),
            ImageConfig(name="tf", formula="tf",
                        description="grey = tf.image.rgb_to_grayscale reproduction"),
        ]

        def __init__(self, *, file_format: str = "array_record", split_seed: int = 42,
                     **kwargs: Any):
            self.split_seed = int(split_seed)
            super().__init__(file_format=file_format, **kwargs)

        def _info(self):
            features = {
                "image": tfds.features.Tensor(shape=(_SIDE, _SIDE), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                "index": tfds.features.Scalar(dtype=np.int32),
            }
            return dataset_info(
                self, features, description=__doc__.split("\n\n")[0],
                homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
                supervised_keys=("image", "label"),
                citation="Krizhevsky (2009), Learning Multiple Layers of Features from Tiny "
                         "Images; Tay et al. (2021), Long Range Arena: A Benchmark for "
                         "Efficient Transformers, ICLR.")

        def _split_generators(self, dl_manager):
            manual = Path(str(dl_manager.manual_dir))
            raw = read_cifar10(manual)
            parts = _split_parts(raw, self.split_seed, None)
            self.info.metadata.update({"split_seed": self.split_seed,
                                       "formula": self.builder_config.formula,
                                       "source": str(manual)})
            return {s: self._generate_examples(src, idx) for s, (src, idx) in parts.items()}

        def _generate_examples(self, src, indices):
            formula = self.builder_config.formula
            for lo in range(0, len(indices), 4096):
                idx = indices[lo:lo + 4096]
                grey = to_grey(src.images[idx], formula)
                for j, i in enumerate(idx):
                    yield int(i), {"image": grey[j], "label": int(src.labels[i]),
                                   "index": int(i)}

    _BUILDER = ImageBuilder
    return ImageBuilder


_BUILDER = None

# ``ImageBuilder`` is built on first access so that importing this module does not
# import tensorflow_datasets.
__getattr__ = lazy_builder_attribute(__name__, {"ImageBuilder": _builder_class})


def prepare_image(manual_dir: str | os.PathLike | None = None,
                  data_dir: str | os.PathLike | None = None, split_seed: int = 42,
                  formula: str = "pil"):
    """Build (or reuse) ``lra_image/<formula>`` in `data_dir` (array_record) from the
    CIFAR-10 files in `manual_dir` (see `MANUAL_DOWNLOAD_INSTRUCTIONS`).  Returns the
    builder.  Raises ValueError when `data_dir` already holds a build with another
    split seed (the seed is not part of the path: use another `data_dir`)."""
    if formula not in GREY_FORMULAS:
        raise ValueError(f"formula must be one of {GREY_FORMULAS}, got {formula!r}")
    builder = _builder_class()(config=formula, split_seed=split_seed,
                               data_dir=None if data_dir is None else str(data_dir))
    prepare(builder, manual_dir)
    built = builder.info.metadata.get("split_seed")
    if built is not None and int(built) != int(split_seed):
        raise ValueError(f"{builder.data_dir} was built with split_seed {built}, not "
                         f"{split_seed}; use another data_dir")
    return builder


class ImageSource(ImageLabelSource):
    """A prepared ``lra_image`` split as a random-access batch source: ``len()``,
    ``labels`` (n,) int32 and ``batch(indices) -> (grey (b, 32, 32) uint8, labels (b,)
    int32)`` (`tfds_support.ImageLabelSource`)."""

    empty_shape = (0, _SIDE, _SIDE)


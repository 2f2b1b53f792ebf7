"""Pathfinder / Path-X (Long Range Arena): stimulus generator, the official file layout
(writer and reader), grey-level quantisation, the ``pathfinder`` TFDS builder and
random-access batch sources.

Layout (data-formats.md section 3.6), per resolution folder ``pathfinder{32,64,128,256}/``
and difficulty folder (`DIFFICULTIES`: ``curv_baseline`` easy, ``curv_contour_length_9``
intermediate, ``curv_contour_length_14`` hard)::

    <difficulty>/imgs/<batch>/sample_<i>.png      8-bit grey PNG, resolution x resolution
    <difficulty>/metadata/<batch>.npy             one row per image

A metadata row is ``imgs/<batch> sample_<i>.png <i> <label> <continuity>
<contour_length> <distractor_length> <paddle_length> <paddle_thickness>
<paddle_margin> <n_paddle_contrasts>`` (``<i>`` = index within the batch).  Despite
the extension the LRA release stores these as plain text lines; the public generator
wrote them with ``np.save`` (a binary string array).  `read_pathfinder` accepts both
(binary detected by the NumPy magic bytes); `generate_pathfinder` writes either.

LRA's "Pathfinder" is ``pathfinder32`` hard (1,024 steps), "Path-X" ``pathfinder128``
hard (16,384 steps).  The ELM paper bins grey values into 16 levels for Pathfinder and
8 for Path-X and one-hot encodes them (`quantize`, `one_hot`).  Splits are not on disk:
`split_indices` is the seeded 80/10/10 random split (train/validation/test).

Reading is strict: a malformed metadata line, a missing metadata folder or images of
inconsistent size raise `PathfinderFormatError` (a ValueError) naming the file; empty
or undecodable PNGs (the release has an empty
``pathfinder32/curv_baseline/imgs/0/sample_172.png``) are skipped, with their count
logged as a warning.

TFDS: the ``pathfinder`` builder (configs ``pathfinder{32,64,128,256}_{easy,
intermediate,hard}``, array_record, no TensorFlow) reads the official files from the
manual directory or, when there are none, generates them from a seed
(`prepare_pathfinder`).  `PathfinderSource` reads a prepared split through
``tfds.data_source``; `PathfinderArrays` (from `read_pathfinder`) has the same
``batch`` API for training straight from the files.  ``PathfinderBuilder`` is defined
on first use, so importing this module does not import tensorflow_datasets.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
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
from .pathfinder_generator import (
    CONTOUR_LENGTHS,
    DIFFICULTIES,
    GENERATOR_PARAMS,
    RESOLUTIONS,
    GeneratorParams,
    PathfinderGenerationError,
    _generate,
    generate_image,
    image_rng,
)

__all__ = [
    "CONTOUR_LENGTHS", "DIFFICULTIES", "GENERATOR_PARAMS", "LEVELS", "RESOLUTIONS",
    "GeneratorParams", "PathfinderArrays", "PathfinderFormatError",
    "PathfinderGenerationError", "PathfinderSource", "generate_image",
    "generate_pathfinder", "one_hot", "prepare_pathfinder", "quantize",
    "read_pathfinder", "split_indices",
]

log = logging.getLogger(__name__)

#: Grey levels used by the ELM paper: 16 for Pathfinder, 8 for Path-X (resolution 128+).
LEVELS = {32: 16, 64: 16, 128: 8, 256: 8}
SPLITS = ("train", "validation", "test")
_NPY_MAGIC = b"\x93NUMPY"


class PathfinderFormatError(ValueError):
    """A Pathfinder file could not be read; the message names the file."""


def _difficulty_name(difficulty: str) -> str:
    if difficulty in DIFFICULTIES:
        return difficulty
    for name, folder in DIFFICULTIES.items():
        if difficulty == folder:
            return name
    raise ValueError(f"unknown Pathfinder difficulty {difficulty!r}; "
                     f"use one of {sorted(DIFFICULTIES)} or {sorted(DIFFICULTIES.values())}")


# ----------------------------------------------------------------------------------
# writing

def _fmt(x: float) -> str:
    return f"{float(x):g}"


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _write_batch(folder: str, batch: int, start: int, count: int, resolution: int,
                 contour_length: int, seed: int, metadata_format: str) -> None:
    folder_p = Path(folder)
    p = GENERATOR_PARAMS[resolution]
    rows = []
    for j in range(count):
        image, label, masks = _generate(image_rng(seed, start + j), resolution,
                                        contour_length, None, False)
        data = _png_bytes(image)
        atomic_write(folder_p / "imgs" / str(batch) / f"sample_{j}.png",
                     lambda f, d=data: f.write(d))
        rows.append([f"imgs/{batch}", f"sample_{j}.png", str(j), str(label),
                     _fmt(p.continuity), str(contour_length),
                     str(max(1, contour_length // 3)), _fmt(p.paddle_length),
                     _fmt(p.paddle_thickness), _fmt(masks["margin"]), "1"])
    meta = folder_p / "metadata" / f"{batch}.npy"
    if metadata_format == "npy":
        arr = np.array(rows, dtype=str)
        atomic_write(meta, lambda f: np.save(f, arr, allow_pickle=False))
    else:
        text = "".join(" ".join(r) + "\n" for r in rows).encode()
        atomic_write(meta, lambda f: f.write(text))


def generate_pathfinder(directory: str | os.PathLike, resolution: int, difficulty: str,
                        num_images: int, seed: int = 0, *, images_per_batch: int = 1000,
                        metadata_format: str = "text", workers: int = 1) -> Path:
    """Generate `num_images` Pathfinder images in the official layout.

    Writes ``<directory>/<difficulty folder>/imgs/<batch>/sample_<i>.png`` and
    ``<difficulty folder>/metadata/<batch>.npy`` (batch ``b`` holds images
    ``b * images_per_batch ...``; ``<i>`` counts within the batch), every file
    atomically, a batch's metadata after its images.  Image ``n`` uses the random
    stream ``SeedSequence([seed, n])``, so the output is byte-identical for a seed
    whatever `workers` or batching.  ``workers > 1`` runs batches in that many
    processes (``spawn`` start method: a calling script needs the
    ``if __name__ == "__main__":`` guard).  `metadata_format`: ``"text"`` (lines,
    as the LRA release) or ``"npy"`` (``np.save`` of an (n, 11) string array).
    Returns the difficulty folder.
    """
    if resolution not in GENERATOR_PARAMS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    if metadata_format not in ("text", "npy"):
        raise ValueError(f"metadata_format must be 'text' or 'npy', got {metadata_format!r}")
    name = _difficulty_name(difficulty)
    folder = Path(directory) / DIFFICULTIES[name]
    jobs = [(str(folder), b, lo, min(images_per_batch, num_images - lo), resolution,
             CONTOUR_LENGTHS[name], int(seed), metadata_format)
            for b, lo in enumerate(range(0, num_images, images_per_batch))]
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            _write_batch(*job)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for fut in [pool.submit(_write_batch, *job) for job in jobs]:
                fut.result()
    return folder


# ----------------------------------------------------------------------------------
# reading

def _int_stem(path: Path) -> tuple[int, str]:
    m = re.fullmatch(r"-?\d+", path.stem)
    return (int(path.stem), "") if m else (1 << 62, path.stem)


def _read_metadata(path: Path) -> list[tuple[str, int]]:
    """(relative image path, label) per row of one metadata file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PathfinderFormatError(f"{path}: cannot read metadata ({err})") from err
    if raw.startswith(_NPY_MAGIC):
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - any decoding failure is a format error
            raise PathfinderFormatError(f"{path}: unreadable .npy metadata ({err})") from err
        if arr.ndim == 1:
            rows = [str(r).split() for r in arr]
        elif arr.ndim == 2:
            rows = [[str(x) for x in r] for r in arr]
        else:
            raise PathfinderFormatError(f"{path}: metadata array of shape {arr.shape}, "
                                        "expected (n, 11) strings")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PathfinderFormatError(f"{path}: metadata is neither text nor .npy") from err
        rows = [line.split() for line in text.splitlines()]
    out = []
    for n, fields in enumerate(rows, 1):
        if not fields:
            continue
        if len(fields) < 4 or fields[3] not in ("0", "1", "0.0", "1.0"):
            raise PathfinderFormatError(
                f"{path}: malformed metadata row {n}: {' '.join(fields)!r} (expected "
                "'imgs/<batch> sample_<i>.png <i> <label 0|1> ...')")
        out.append((f"{fields[0]}/{fields[1]}", int(float(fields[3]))))
    return out


def _locate(directory: str | os.PathLike, difficulty: str | None) -> Path:
    folder = Path(directory).expanduser()
    if difficulty is not None:
        folder = folder / DIFFICULTIES[_difficulty_name(difficulty)]
    if not (folder / "metadata").is_dir():
        raise PathfinderFormatError(
            f"{folder}: no metadata folder (expected <difficulty folder>/metadata/<batch>.npy"
            " and imgs/<batch>/sample_<i>.png; pass a difficulty folder such as "
            ".../pathfinder32/curv_contour_length_14, or the resolution folder and a "
            "difficulty)")
    return folder


def _index(folder: Path, limit: int | None = None) -> list[tuple[str, int]]:
    files = sorted((p for p in (folder / "metadata").iterdir()
                    if p.is_file() and not p.name.startswith(".")), key=_int_stem)
    entries: list[tuple[str, int]] = []
    for path in files:
        entries += _read_metadata(path)
        if limit is not None and len(entries) >= limit:
            return entries[:limit]
    return entries


def _decode_png(path: Path) -> np.ndarray | None:
    """The image as (H, W) uint8, or None when empty or undecodable."""
    from PIL import Image

    try:
        data = path.read_bytes()
        if not data:
            return None
        with Image.open(io.BytesIO(data)) as img:
            if img.mode != "L":
                img = img.convert("L")
            return np.asarray(img, np.uint8)
    except (OSError, ValueError, SyntaxError):
        return None


@dataclasses.dataclass(frozen=True, eq=False)
class PathfinderArrays:
    """Pathfinder images held in memory.

    Attributes:
      images: (n, H, W) uint8 grey images.
      labels: (n,) int32, 1 = the markers are connected.
      paths: n image paths relative to the difficulty folder (``imgs/0/sample_0.png``).
      folder: the difficulty folder read.
      skipped: number of empty or undecodable images left out.
    """

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    folder: Path | None = None
    skipped: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(images (b, H, W) uint8, labels (b,) int32)`` of `indices`."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        return self.images[idx], self.labels[idx]

    def subset(self, indices: Sequence[int]) -> PathfinderArrays:
        idx = np.asarray(indices, np.int64).reshape(-1)
        return PathfinderArrays(self.images[idx], self.labels[idx],
                                [self.paths[i] for i in idx], self.folder, 0)

    def split(self, name: str, seed: int = 42,
              fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> PathfinderArrays:
        """The `split_indices` part `name` (what the TFDS builder stores as that split)."""
        return self.subset(split_indices(len(self), seed, fractions)[name])


def read_pathfinder(directory: str | os.PathLike, difficulty: str | None = None, *,
                    limit: int | None = None) -> PathfinderArrays:
    """Read a Pathfinder difficulty folder (official layout, see module doc).

    Args:
      directory: the difficulty folder (``.../pathfinder32/curv_contour_length_14``), or
        a resolution folder together with `difficulty`.
      difficulty: ``easy``/``intermediate``/``hard`` or a folder name.
      limit: read only the first `limit` metadata rows (fast subset).
    Returns `PathfinderArrays` in metadata order (files sorted by integer stem).
    """
    folder = _locate(directory, difficulty)
    entries = _index(folder, limit)
    images, labels, paths = [], [], []
    skipped = 0
    shape = None
    for rel, label in entries:
        path = folder / rel
        img = _decode_png(path)
        if img is None:
            skipped += 1
            continue
        if shape is None:
            shape = img.shape
        elif img.shape != shape:
            raise PathfinderFormatError(
                f"{path}: image of size {img.shape}, but earlier images are {shape}")
        images.append(img)
        labels.append(label)
        paths.append(rel)
    if skipped:
        log.warning("%s: skipped %d empty or unreadable image(s)", folder, skipped)
    arr = np.stack(images) if images else np.zeros((0, 0, 0), np.uint8)
    return PathfinderArrays(arr, np.asarray(labels, np.int32), paths, folder, skipped)


def split_indices(n: int, seed: int = 42, fractions: Sequence[float] = (0.8, 0.1, 0.1)
                  ) -> dict[str, np.ndarray]:
    """Seeded random split of ``range(n)``: ``{"train", "validation", "test"}`` -> sorted
    int64 indices, sizes ``floor(f * n)`` for train and validation, the rest test."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1: {fractions}")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(np.floor(fractions[0] * n))
    n_val = int(np.floor(fractions[1] * n))
    parts = (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:])
    return {name: np.sort(p).astype(np.int64) for name, p in zip(SPLITS, parts, strict=True)}


def quantize(images: np.ndarray, levels: int) -> np.ndarray:
    """Bin grey values 0..255 into `levels` equal-width bins (``v * levels // 256``) and
    flatten row by row: (n, H, W) uint8 -> (n, H * W) uint8 in ``[0, levels)``.
    The ELM paper uses 16 levels for Pathfinder, 8 for Path-X (`LEVELS`)."""
    if not 1 <= levels <= 256:
        raise ValueError(f"levels must be in [1, 256], got {levels}")
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise ValueError(f"quantize expects uint8 images, got {x.dtype}")
    q = (x.astype(np.uint16) * levels) >> 8 if levels & (levels - 1) == 0 \
        else (x.astype(np.uint16) * levels) // 256
    return q.astype(np.uint8).reshape(x.shape[0], -1)


def one_hot(levels_array: np.ndarray, levels: int) -> np.ndarray:
    """(n, T) integer levels -> (n, T, levels) float32 one-hot."""
    return np.eye(levels, dtype=np.float32)[np.asarray(levels_array, np.int64)]


# ----------------------------------------------------------------------------------
# TFDS

NAME = "pathfinder"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Optional.  To use the official LRA Pathfinder data, download lra_release.gz from the
Long Range Arena repository (github.com/google-research/long-range-arena, Google Cloud
bucket link in its README), unpack it and put (or link) the resolution folders in the
manual directory: <manual>/pathfinder32/curv_contour_length_14/{imgs,metadata}/...
(an lra_release/ level above pathfinder32/, even two, is also accepted).  The manual
directory is <data_dir>/downloads/manual/ by default (data_dir defaults to
~/tensorflow_datasets); pass --manual_dir DIR to `tfds build` or
download_config=tfds.download.DownloadConfig(manual_dir=DIR).  Without these files the
builder generates the images from a seed (constructor arguments seed, num_images).
"""


def find_official(manual: str | os.PathLike, resolution: int, difficulty: str) -> Path | None:
    """The official difficulty folder under `manual` (``pathfinder<res>/<folder>``,
    optionally below one or two ``lra_release/`` levels), or None."""
    sub = Path(f"pathfinder{resolution}") / DIFFICULTIES[_difficulty_name(difficulty)]
    base = Path(manual).expanduser()
    for cand in (base / sub, base / "lra_release" / sub,
                 base / "lra_release" / "lra_release" / sub):
        if (cand / "metadata").is_dir():
            return cand
    return None


def _builder_class():
    """Define (once) and return the ``pathfinder`` builder class (tfds imported lazily)."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    tfds = import_tfds()

    class PathfinderConfig(tfds.core.BuilderConfig):
        """One resolution and difficulty."""

        def __init__(self, *, resolution: int, difficulty: str, **kwargs: Any):
            super().__init__(**kwargs)
            self.resolution = resolution
            self.difficulty = difficulty

    class PathfinderBuilder(tfds.core.GeneratorBasedBuilder):
        """TFDS builder ``pathfinder``: LRA Pathfinder images (official or generated)."""

        name = NAME
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {
            "1.0.0": "Pathfinder images (H, W) uint8, label, index; seeded 80/10/10."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
        BUILDER_CONFIGS: ClassVar[list] = [
            PathfinderConfig(name=f"pathfinder{r}_{d}", resolution=r, difficulty=d,
                             description=f"pathfinder{r}/{DIFFICULTIES[d]}")
            for r in RESOLUTIONS for d in DIFFICULTIES]

        def __init__(self, *, file_format: str = "array_record", seed: int = 0,
                     num_images: int = 200_000, split_seed: int = 42, **kwargs: Any):
            self.seed = int(seed)
            self.num_images = int(num_images)
            self.split_seed = int(split_seed)
            super().__init__(file_format=file_format, **kwargs)

        def _info(self):
            r = self.builder_config.resolution
            features = {
                "image": tfds.features.Tensor(shape=(r, r), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=2),
                "index": tfds.features.Scalar(dtype=np.int32),
            }
            return dataset_info(
                self, features, description=__doc__.split("\n\n")[0],
                homepage="https://github.com/google-research/long-range-arena",
                supervised_keys=("image", "label"),
                citation="Tay et al. (2021), Long Range Arena: A Benchmark for Efficient "
                         "Transformers, ICLR; Linsley et al. (2018), Learning long-range "
                         "spatial dependencies with horizontal gated recurrent units.")

        def _split_generators(self, dl_manager):
            cfg = self.builder_config
            try:
                manual = Path(dl_manager.manual_dir)
            except (AssertionError, ValueError):
                manual = None
            folder = None if manual is None else find_official(
                manual, cfg.resolution, cfg.difficulty)
            if folder is None:
                root = (Path(dl_manager.download_dir) / "pathfinder_generated"
                        / f"seed{self.seed}_n{self.num_images}"
                        / f"pathfinder{cfg.resolution}")
                folder = root / DIFFICULTIES[cfg.difficulty]
                if not (folder / "metadata").is_dir() or \
                        len(_index(folder)) != self.num_images:
                    generate_pathfinder(root, cfg.resolution, cfg.difficulty,
                                        self.num_images, self.seed)
                source = "generated"
            else:
                source = "official"
            listed = _index(folder)
            entries = [(rel, lab) for rel, lab in listed
                       if (folder / rel).is_file() and (folder / rel).stat().st_size > 0]
            skipped = len(listed) - len(entries)
            if skipped:
                log.warning("%s: skipped %d empty or missing image(s)", folder, skipped)
            parts = split_indices(len(entries), self.split_seed)
            self.info.metadata.update({"source": source, "folder": str(folder),
                                       "seed": self.seed, "split_seed": self.split_seed,
                                       "skipped": skipped})
            return {s: self._generate_examples(folder, entries, parts[s]) for s in SPLITS}

        def _generate_examples(self, folder, entries, indices):
            r = self.builder_config.resolution
            for i in indices:
                rel, label = entries[int(i)]
                img = _decode_png(folder / rel)
                if img is None:
                    log.warning("%s: unreadable image skipped", folder / rel)
                    continue
                if img.shape != (r, r):
                    raise PathfinderFormatError(
                        f"{folder / rel}: image of size {img.shape}, expected {(r, r)}")
                yield int(i), {"image": img, "label": int(label), "index": int(i)}

    _BUILDER = PathfinderBuilder
    return PathfinderBuilder


_BUILDER = None


# ``PathfinderBuilder`` is built on first access so that importing this module does not
# import tensorflow_datasets.
__getattr__ = lazy_builder_attribute(__name__, {"PathfinderBuilder": _builder_class})


def prepare_pathfinder(resolution: int = 32, difficulty: str = "hard",
                       manual_dir: str | os.PathLike | None = None,
                       data_dir: str | os.PathLike | None = None, **kw: Any):
    """Build (or reuse) ``pathfinder/pathfinder<resolution>_<difficulty>`` in `data_dir`
    (array_record) from the official files in `manual_dir`, or generated ones
    (`kw`: ``seed``, ``num_images``, ``split_seed``).  Returns the builder."""
    name = _difficulty_name(difficulty)
    builder = _builder_class()(config=f"pathfinder{resolution}_{name}",
                               data_dir=None if data_dir is None else str(data_dir), **kw)
    return prepare(builder, manual_dir)


class PathfinderSource(ImageLabelSource):
    """A prepared ``pathfinder`` split as a random-access batch source: ``len()``,
    ``labels`` (n,) int32 and ``batch(indices) -> (images (b, H, W) uint8, labels (b,)
    int32)`` (`tfds_support.ImageLabelSource`)."""


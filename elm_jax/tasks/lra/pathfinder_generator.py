"""Pathfinder stimulus generator (a clean-room NumPy implementation of the
specification in data-formats.md section 3.7; no third-party code).

An image shows two *target snakes* of ``contour_length`` paddles (short straight
strokes separated by small gaps) grown in lock-step from two seeds exactly
``seed_distance`` apart, plus short *distractor snakes* of ``contour_length // 3``
paddles, and two marker disks on snake tips: label 1 = both disks on the two tips of
the same target snake, label 0 = one disk on a tip of each target (label ~
Bernoulli(0.5)).  Everything is drawn at ``antialias_scale`` x the resolution,
reduced with Lanczos resampling (PIL), clipped at 0 and byte-scaled min -> 0,
max -> 255 (uint8), as the original generator saved its images.

Geometry at the antialias scale (all integer pixels; ``L``, ``t``, ``m`` = paddle
length, thickness, margin times ``antialias_scale``):

* A paddle runs from a *pivot* pixel ``p`` to ``p + o_k``, where ``o_k`` is one of the
  integer offsets on the circle of radius ``L`` (direction ``k``); it is drawn as the
  segment stamped with a disk of diameter ``t``.
* The next paddle's pivot lies ``m + t - 1`` pixels beyond the current paddle's end
  along its direction (a gap of about ``m`` pixels between stroke edges).  Its
  direction is sampled among all ``k`` with weight
  ``valid_k * max(cos(min(continuity * |turn_k|, pi/2)), 0) ** 2``.
* ``valid_k``: every stroke pixel lies inside the canvas less ``padding`` and no
  stroke pixel of any *other* paddle (except the snake's previous one) lies within
  the clearance ``gap + 2`` pixels.  Different snakes therefore never touch, not even
  through the gaps between paddles: the polyline of a snake including its gaps (the
  "skeleton" of ``return_masks=True``) is 8-connected, and skeletons of different
  snakes are disjoint and non-adjacent, which makes the label a connectivity fact.
  (This clearance is stricter than the original's "dilate by margin" rule.)
* Snakes are seeded at random free positions with a random direction; the second
  target's seed is a random pixel on the circle of radius ``seed_distance`` around the
  first.  A target that cannot grow restarts the whole image (the random stream goes
  on, so output stays deterministic per seed); a distractor that cannot grow is
  removed.  Distractors stop when less than 1 % of the canvas is free.
* Strokes have intensity ``snake_contrast * paddle_contrast``, marker disks 1; the
  image is their pixelwise maximum.

`generate_image` takes ~2-6 ms per image at resolution 32 and ~14-40 ms at 128 on one
CPU core (measured in docs/lra_pathfinder_generator.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np

#: Image resolutions of the LRA release (``pathfinder32`` ... ``pathfinder256``).
RESOLUTIONS = (32, 64, 128, 256)
#: Difficulty -> folder name in the release.
DIFFICULTIES = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9",
                "hard": "curv_contour_length_14"}
#: Difficulty -> target snake length in paddles.
CONTOUR_LENGTHS = {"easy": 6, "intermediate": 9, "hard": 14}


@dataclasses.dataclass(frozen=True)
class GeneratorParams:
    """LRA's Pathfinder generator parameters for one resolution (section 3.7 table).

    Lengths are in output pixels (multiplied by ``antialias_scale`` for drawing).
    ``paddle_margin`` is a tuple of choices, one drawn per image (LRA's Path-X
    docstring gives "2 or 3").  ``distractor_budget`` N gives ``N // distractor_length``
    distractor snakes.
    """

    resolution: int
    padding: int
    paddle_margin: tuple[float, ...]
    paddle_length: float
    paddle_thickness: float
    marker_radius: float
    seed_distance: float
    continuity: float
    antialias_scale: int
    distractor_budget: int
    snake_contrast: float
    paddle_contrast: float
    max_image_attempts: int = 200


GENERATOR_PARAMS: dict[int, GeneratorParams] = {
    32: GeneratorParams(32, padding=1, paddle_margin=(1,), paddle_length=2,
                        paddle_thickness=0.5, marker_radius=1.5, seed_distance=7,
                        continuity=1.0, antialias_scale=2, distractor_budget=20,
                        snake_contrast=2.0, paddle_contrast=0.75),
    64: GeneratorParams(64, padding=1, paddle_margin=(1,), paddle_length=5,
                        paddle_thickness=1, marker_radius=2.5, seed_distance=12,
                        continuity=1.8, antialias_scale=2, distractor_budget=22,
                        snake_contrast=0.8, paddle_contrast=1.0),
    128: GeneratorParams(128, padding=1, paddle_margin=(2, 3), paddle_length=5,
                         paddle_thickness=1.5, marker_radius=3, seed_distance=20,
                         continuity=1.8, antialias_scale=2, distractor_budget=35,
                         snake_contrast=0.9, paddle_contrast=1.0),
    256: GeneratorParams(256, padding=22, paddle_margin=(3,), paddle_length=5,
                         paddle_thickness=2, marker_radius=5, seed_distance=27,
                         continuity=1.8, antialias_scale=2, distractor_budget=30,
                         snake_contrast=1.0, paddle_contrast=1.0),
}


class PathfinderGenerationError(RuntimeError):
    """No valid image after ``max_image_attempts`` tries (parameters too crowded)."""


def _disk(radius: float) -> np.ndarray:
    """(n, 2) integer (dy, dx) offsets of the pixels within `radius` of the origin."""
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = yy ** 2 + xx ** 2 <= radius ** 2 + 1e-9
    return np.stack([yy[keep], xx[keep]], 1)


def _segment(end: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """(n, 2) unique pixel offsets of the segment (0, 0) -> `end` stamped with `footprint`."""
    steps = max(1, int(math.ceil(2 * float(np.hypot(*end)))))
    s = np.linspace(0.0, 1.0, steps + 1)[:, None]
    pts = np.rint(s * end[None, :]).astype(np.int64)
    px = (pts[:, None, :] + footprint[None, :, :]).reshape(-1, 2)
    return np.unique(px, axis=0)


@dataclasses.dataclass(frozen=True, eq=False)
class _Geometry:
    """Precomputed offsets (flat indices on the bordered canvas) for one parameter set."""

    size: int            # canvas side at antialias scale (S)
    border: int          # extra border around the canvas so gathers never leave it
    side: int            # S + 2 * border
    angles: np.ndarray   # (K,) direction angles (radians)
    tip: np.ndarray      # (K,) flat offset pivot -> paddle end
    gap: np.ndarray      # (K,) flat offset paddle end -> next pivot
    stroke: list         # K arrays of flat stroke offsets (from the pivot)
    body: list           # K arrays: stroke + the gap line after it (owned pixels)
    body_all: np.ndarray
    body_start: np.ndarray
    halo: list           # K arrays: stroke offsets dilated by the clearance
    halo_all: np.ndarray
    halo_start: np.ndarray
    gap_line: list       # K arrays: skeleton pixels of the gap (from the paddle end)
    seed_ring: np.ndarray  # flat offsets on the circle of radius seed_distance
    marker: np.ndarray   # flat offsets of the marker disk
    inside: np.ndarray   # (side*side,) bool: canvas less padding
    interior: np.ndarray  # flat indices of `inside`


def _ring(radius: float) -> np.ndarray:
    r = int(math.ceil(radius)) + 1
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = np.abs(np.hypot(yy, xx) - radius) < 0.5
    off = np.stack([yy[keep], xx[keep]], 1)
    order = np.argsort(np.arctan2(off[:, 0], off[:, 1]), kind="stable")
    return off[order]


@functools.lru_cache(maxsize=32)
def _geometry(p: GeneratorParams, margin: float) -> _Geometry:
    resolution = p.resolution
    aa = p.antialias_scale
    size = resolution * aa
    length = p.paddle_length * aa
    thick = max(1.0, p.paddle_thickness * aa)
    m = margin * aa
    gap_len = int(round(m + thick - 1))
    clearance = m + 1
    foot = _disk(max(0.0, (thick - 1) / 2)) if thick > 1 else np.zeros((1, 2), np.int64)
    dirs = _ring(length)
    angles = np.arctan2(dirs[:, 0], dirs[:, 1])
    unit = np.stack([np.sin(angles), np.cos(angles)], 1)
    gaps = np.rint(unit * gap_len).astype(np.int64)
    clear = _disk(clearance)
    strokes2, bodies2, halos2, lines2 = [], [], [], []
    for k in range(len(dirs)):
        s = _segment(dirs[k], foot)
        line = _segment(gaps[k], np.zeros((1, 2), np.int64))
        lines2.append(line)
        # a paddle owns its stroke and the gap line after it
        body = np.unique(np.concatenate([s, dirs[k] + line]), axis=0)
        strokes2.append(s)
        bodies2.append(body)
        h = (body[:, None, :] + clear[None, :, :]).reshape(-1, 2)
        halos2.append(np.unique(h, axis=0))
    ring = _ring(p.seed_distance * aa)
    marker = _disk(p.marker_radius * aa)
    extent = max(int(np.abs(np.concatenate(halos2)).max()),
                 int(np.abs(marker).max()), int(np.abs(ring).max()) + 1)
    border = extent + gap_len + 2
    side = size + 2 * border

    def flat(off):
        return (off[..., 0] * side + off[..., 1]).astype(np.int64)

    stroke = [flat(s) for s in strokes2]
    body = [flat(b) for b in bodies2]
    halo = [flat(h) for h in halos2]
    inside = np.zeros((side, side), bool)
    pad = p.padding * aa
    inside[border + pad:border + size - pad, border + pad:border + size - pad] = True
    inside = inside.reshape(-1)

    def starts(arrs):
        return np.cumsum([0] + [len(a) for a in arrs[:-1]]).astype(np.int64)

    return _Geometry(
        size=size, border=border, side=side, angles=angles, tip=flat(dirs),
        gap=flat(gaps), stroke=stroke, body=body, body_all=np.concatenate(body),
        body_start=starts(body), halo=halo, halo_all=np.concatenate(halo),
        halo_start=starts(halo), gap_line=[flat(g) for g in lines2],
        seed_ring=flat(ring), marker=flat(marker), inside=inside,
        interior=np.flatnonzero(inside))


class _Canvas:
    """Occupancy (paddle ids) and drawn snakes of one image attempt."""

    def __init__(self, geo: _Geometry, continuity: float):
        self.geo = geo
        self.continuity = continuity
        self.owner = np.zeros(geo.side * geo.side, np.int32)
        self.paddles: list[np.ndarray] = []   # stroke pixels (flat) per paddle id - 1
        self.bodies: list[np.ndarray] = []    # owned pixels (stroke + gap) per paddle
        self.snakes: list[dict[str, Any]] = []

    # -- validity --------------------------------------------------------------
    def _valid_all(self, pivot: int, prev_id: int) -> np.ndarray:
        g = self.geo
        vals = self.owner[pivot + g.halo_all]
        bad = (vals != 0) & (vals != prev_id)
        ok = ~np.logical_or.reduceat(bad, g.halo_start)
        ins = np.logical_and.reduceat(g.inside[pivot + g.body_all], g.body_start)
        return ok & ins

    def _valid_at(self, pivots: np.ndarray, k: int) -> np.ndarray:
        g = self.geo
        occupied = (self.owner[pivots[:, None] + g.halo[k][None, :]] != 0).any(1)
        ins = g.inside[pivots[:, None] + g.body[k][None, :]].all(1)
        return ins & ~occupied

    # -- drawing ---------------------------------------------------------------
    def _place(self, snake: dict[str, Any], pivot: int, k: int) -> None:
        g = self.geo
        self.paddles.append(pivot + g.stroke[k])
        self.bodies.append(pivot + g.body[k])
        pid = len(self.paddles)
        self.owner[self.bodies[-1]] = pid
        snake["paddles"].append(pid)
        snake["ks"].append(k)
        snake["ends"].append(pivot + int(g.tip[k]))

    def pop(self, snake: dict[str, Any]) -> None:
        """Remove the snake's last paddle (backtracking)."""
        pid = snake["paddles"].pop()
        snake["ks"].pop()
        snake["ends"].pop()
        # bodies of other paddles never overlap, except a paddle's pivot pixel, which
        # ends the previous paddle's gap line: clear, then restamp the previous one
        self.owner[self.bodies[pid - 1]] = 0
        if snake["paddles"]:
            prev = snake["paddles"][-1]
            self.owner[self.bodies[prev - 1]] = prev

    def skeleton(self, snake: dict[str, Any]) -> np.ndarray:
        """Flat pixels of the snake's strokes and the gaps between them."""
        g = self.geo
        parts = [self.paddles[pid - 1] for pid in snake["paddles"]]
        parts += [end + g.gap_line[k] for end, k in
                  zip(snake["ends"][:-1], snake["ks"][:-1], strict=True)]
        return np.concatenate(parts)

    def seed(self, rng: np.random.Generator, pivots: np.ndarray | None = None,
             tries: int = 8) -> dict[str, Any] | None:
        """Start a snake (first paddle) at a random free position, or at one of
        `pivots` (flat indices); None if nothing fits."""
        g = self.geo
        for _ in range(tries):
            k = int(rng.integers(len(g.tip)))
            if pivots is None:
                cand = g.interior[rng.integers(len(g.interior), size=64)]
            else:
                cand = rng.permutation(pivots[g.inside[pivots]])
            ok = np.flatnonzero(self._valid_at(cand, k))
            if ok.size:
                snake = {"paddles": [], "ks": [], "ends": [], "start": int(cand[ok[0]])}
                self._place(snake, int(cand[ok[0]]), k)
                self.snakes.append(snake)
                return snake
        return None

    def extend(self, rng: np.random.Generator, snake: dict[str, Any]) -> bool:
        g = self.geo
        last = snake["ks"][-1]
        pivot = snake["ends"][-1] + int(g.gap[last])
        turn = np.abs(np.angle(np.exp(1j * (g.angles - g.angles[last]))))
        w = np.cos(np.minimum(self.continuity * turn, np.pi / 2)).clip(0) ** 2
        w = w * self._valid_all(pivot, snake["paddles"][-1])
        total = w.sum()
        if total <= 1e-12:
            return False
        k = int(np.searchsorted(np.cumsum(w), rng.random() * total, side="right"))
        self._place(snake, pivot, min(k, len(w) - 1))
        return True

    def free_fraction(self) -> float:
        g = self.geo
        return float(np.count_nonzero(self.owner[g.interior] == 0)) / len(g.interior)


def _downsample(canvas: np.ndarray, resolution: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(canvas.astype(np.float32), mode="F")
    small = np.asarray(img.resize((resolution, resolution), Image.LANCZOS), np.float64)
    small = np.clip(small, 0.0, None)
    lo, hi = small.min(), small.max()
    if hi <= lo:
        return np.zeros_like(small, np.uint8)
    return (np.clip((small - lo) * (255.0 / (hi - lo)), 0, 255) + 0.5).astype(np.uint8)


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of image `index` of a dataset generated with `seed`
    (``SeedSequence([seed, index])``): an image does not depend on batching or workers."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def generate_image(rng: np.random.Generator | int | None, resolution: int,
                   contour_length: int, *, params: GeneratorParams | None = None,
                   return_masks: bool = False) -> tuple:
    """One Pathfinder image.

    Args:
      rng: a NumPy Generator (advanced) or a seed.
      resolution: 32, 64, 128 or 256 (selects `GENERATOR_PARAMS`).
      contour_length: target snake length in paddles (6 / 9 / 14).
      params: override the resolution's `GeneratorParams`.
      return_masks: also return a dict of antialias-scale (S, S) masks (S =
        resolution * antialias_scale): ``strokes`` bool, ``skeleton`` bool (the
        snakes as 8-connected polylines including the gaps between paddles),
        ``markers`` bool, ``snake_id`` int32 (1, 2 = targets, 3... = distractors,
        0 = none; on skeleton pixels), ``tips`` ((y, x), (y, x)) marker centres, and
        ``margin`` (the margin drawn for this image).

    Returns:
      ``(image (resolution, resolution) uint8, label int)`` or with `return_masks`
      ``(image, label, masks)``.
    """
    image, label, extra = _generate(rng, resolution, contour_length, params, return_masks)
    return (image, label, extra) if return_masks else (image, label)


def _generate(rng, resolution: int, contour_length: int, params: GeneratorParams | None,
              return_masks: bool) -> tuple[np.ndarray, int, dict[str, Any]]:
    """`generate_image` returning ``(image, label, extra)``; `extra` is the masks dict
    or just ``{"margin": ...}``."""
    rng = _as_rng(rng)
    p = GENERATOR_PARAMS[resolution] if params is None else params
    for _ in range(p.max_image_attempts):
        margin = p.paddle_margin[int(rng.integers(len(p.paddle_margin)))]
        geo = _geometry(p, margin)
        out = _attempt(rng, p, geo, contour_length, margin, return_masks)
        if out is not None:
            return out
    raise PathfinderGenerationError(
        f"no valid Pathfinder image (resolution {resolution}, contour length "
        f"{contour_length}) after {p.max_image_attempts} attempts")


def _attempt(rng, p: GeneratorParams, geo: _Geometry, contour_length: int, margin,
             return_masks: bool):
    cv = _Canvas(geo, p.continuity)
    a = cv.seed(rng)
    if a is None:
        return None
    b = cv.seed(rng, pivots=a["start"] + geo.seed_ring)
    if b is None:
        return None
    # lock-step growth; a snake that is stuck loses its last paddle (backtracking)
    budget = 6 * contour_length
    while len(a["paddles"]) < contour_length or len(b["paddles"]) < contour_length:
        for s in (a, b):
            if len(s["paddles"]) < contour_length and not cv.extend(rng, s):
                budget -= 1
                if budget < 0:
                    return None
                if len(s["paddles"]) > 1:
                    cv.pop(s)
    distractor_length = max(1, contour_length // 3)
    for _ in range(p.distractor_budget // distractor_length):
        if cv.free_fraction() < 0.01:
            break
        d = cv.seed(rng, tries=2)
        if d is None:
            continue
        for _ in range(distractor_length - 1):
            if not cv.extend(rng, d):
                while d["paddles"]:
                    cv.pop(d)
                cv.snakes.remove(d)
                break
    label = int(rng.random() < 0.5)
    first = [a, b][int(rng.integers(2))]
    second = first if label else (b if first is a else a)
    tips = (first["start"], second["ends"][-1])
    side = geo.side
    canvas = np.zeros(side * side, np.float32)
    contrast = p.snake_contrast * p.paddle_contrast
    for s in cv.snakes:
        for pid in s["paddles"]:
            canvas[cv.paddles[pid - 1]] = contrast
    markers = np.zeros(side * side, bool)
    for t in tips:
        markers[t + geo.marker] = True
    canvas = np.maximum(canvas, markers.astype(np.float32))
    bd, S = geo.border, geo.size

    def crop(flat):
        return flat.reshape(side, side)[bd:bd + S, bd:bd + S]

    image = _downsample(crop(canvas), p.resolution)
    if not return_masks:
        return image, label, {"margin": margin}
    strokes = np.zeros(side * side, bool)
    skeleton = np.zeros(side * side, bool)
    snake_id = np.zeros(side * side, np.int32)
    for i, s in enumerate(cv.snakes, 1):
        for pid in s["paddles"]:
            strokes[cv.paddles[pid - 1]] = True
        pix = cv.skeleton(s)
        skeleton[pix] = True
        snake_id[pix] = i
    masks = {"strokes": crop(strokes).copy(), "skeleton": crop(skeleton).copy(),
             "markers": crop(markers).copy(), "snake_id": crop(snake_id).copy(),
             "tips": tuple((t // side - bd, t % side - bd) for t in tips),
             "margin": margin}
    return image, label, masks

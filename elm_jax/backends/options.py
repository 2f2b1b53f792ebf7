"""Per-backend option objects of `elm_jax.apply` and the rule that converts the legacy
flat keywords into them.

* `ScanOptions` -- ``backend="scan"``.
* `HoistedOptions` -- ``backend="hoisted"`` and ``backend="associative"``.
* `DeerOptions` -- ``backend="deer"``.

All are frozen, validated dataclasses (hashable: `apply` takes them as a static
argument).  A backend accepts only its own options type; `resolve_options` turns the
legacy keywords (``unroll``, ``remat``, ``chunk_size``, ``compute_dtype``,
``custom_backward``, ``deer_options``) into the resolved backend's options and raises a
ValueError naming the keyword and the backend for a keyword that backend does not use.
The rule for a legacy keyword: ``None`` means "not given"; a value equal to the old
default of `apply` (``unroll=1``, ``remat="auto"``, ``custom_backward=True``) is
accepted by every backend (it asks for nothing); any other value must be used by the
backend.  Together with ``options=`` every non-None legacy keyword is an error (one
place per option).  See docs/backends.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

REMAT_MODES = ("auto", "none", "step", "chunk")
JACOBIANS = ("full", "diagonal")
ON_FAILURE = ("raise", "nan", "ignore")


def _fail(cls: Any, field: str, value: Any, expected: str) -> None:
    raise ValueError(f"{type(cls).__name__}.{field}={value!r} is invalid: expected {expected}")


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _check_common(opts: Any) -> None:
    """unroll, chunk_size and compute_dtype (shared by ScanOptions and HoistedOptions)."""
    if not _is_int(opts.unroll) or opts.unroll < 1:
        _fail(opts, "unroll", opts.unroll, "an integer >= 1")
    if opts.chunk_size is not None and (not _is_int(opts.chunk_size) or opts.chunk_size < 1):
        _fail(opts, "chunk_size", opts.chunk_size, "None or an integer >= 1")
    _normalise_dtype(opts)


def _normalise_dtype(opts: Any) -> None:
    """compute_dtype: None or a floating dtype, stored as a `numpy.dtype`."""
    value = opts.compute_dtype
    if value is None:
        return
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        _fail(opts, "compute_dtype", value, "None or a floating dtype (e.g. jnp.bfloat16)")
    object.__setattr__(opts, "compute_dtype", dtype)


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """Options of ``backend="scan"`` (the plain sequential step in one `lax.scan`).

    Attributes:
      unroll: `lax.scan` unroll factor (an int >= 1).
      remat: what the backward stores: ``"none"`` every step's residuals, ``"step"``
        the carry only (each step checkpointed), ``"chunk"`` checkpoints chunks of
        `chunk_size` steps, ``"auto"`` (default) ``"chunk"`` from
        `elm_jax.backends.scan.AUTO_REMAT_MIN_STEPS` steps on, else ``"none"``.
      chunk_size: steps per chunk when remat resolves to ``"chunk"`` (None: about
        sqrt(time), `elm_jax.backends.scan.default_chunk_size`).
      compute_dtype: matmul operand dtype (e.g. ``jnp.bfloat16``) or None.
    """

    unroll: int = 1
    remat: str = "auto"
    chunk_size: int | None = None
    compute_dtype: Any = None

    def __post_init__(self) -> None:
        _check_common(self)
        if self.remat not in REMAT_MODES:
            _fail(self, "remat", self.remat, f"one of {REMAT_MODES}")


@dataclasses.dataclass(frozen=True)
class HoistedOptions:
    """Options of ``backend="hoisted"`` and ``backend="associative"``.

    Attributes:
      unroll: `lax.scan` unroll of the memory core's loops (an int >= 1).
      chunk_size: steps per chunk of the memory core (None: the rule of
        `elm_jax.backends.hoisted.hoisted_chunk_size`).
      compute_dtype: matmul operand dtype (e.g. ``jnp.bfloat16``) or None.
      store_activations: whether the forward loop stores the MLP activations for the
        custom backward (True), or the backward recomputes them (False); ``"auto"``
        (default): `elm_jax.backends.hoisted.should_store_activations`.
      custom_backward: the memory core's custom VJP (True, default) or plain autodiff
        of the same loop (False, for benchmarking; then `store_activations` must not
        be True).
    """

    unroll: int = 1
    chunk_size: int | None = None
    compute_dtype: Any = None
    store_activations: Any = "auto"
    custom_backward: bool = True

    def __post_init__(self) -> None:
        _check_common(self)
        store = self.store_activations
        if not (store == "auto" if isinstance(store, str) else isinstance(store, bool)):
            _fail(self, "store_activations", self.store_activations,
                  "'auto', True or False")
        if not isinstance(self.custom_backward, bool):
            _fail(self, "custom_backward", self.custom_backward, "a bool")
        if self.store_activations is True and not self.custom_backward:
            _fail(self, "store_activations", True,
                  "'auto' or False with custom_backward=False (only the custom backward "
                  "uses stored activations)")


@dataclasses.dataclass(frozen=True)
class DeerOptions:
    """Options of the ``"deer"`` backend (frozen and hashable: a jit static argument).

    Attributes:
      max_iter: most Newton iterations (>= 1).  Undamped Newton needs at most ``T``.
      tol: stop when ``max |m_t - f(m_{t-1}, b_t)| <= tol * max(1, max |m_t|)``.
        ``None``: 1e-10 for float64 memory, 1e-5 for float32, 1e-2 for 16-bit floats.
      damping: convex step damping ``d`` in [0, 1): ``M <- M + (1 - d)(M_newton - M)``.
        0 (default) is plain Newton.
      jacobian: ``"full"`` (DEER, default) or ``"diagonal"`` (quasi-DEER).
      on_failure: ``"raise"`` (default), ``"nan"`` or ``"ignore"`` when the iteration
        stops above ``tol`` (see `elm_jax.backends.deer` for how "raise" surfaces).
      project: clip every iterate into the box that holds every true trajectory
        (`elm_jax.backends.deer.invariant_bound`; default True).  It never moves the
        solution and keeps the at-most-T guarantee.
      compute_dtype: matmul operand dtype of the memory update (e.g. ``jnp.bfloat16``)
        or None: the fixed point solved is the one of ``backend="scan"`` with the same
        compute_dtype.  The Jacobians and linear solves stay in the parameter dtype.
    """

    max_iter: int = 100
    tol: float | None = None
    damping: float = 0.0
    jacobian: str = "full"
    on_failure: str = "raise"
    project: bool = True
    compute_dtype: Any = None

    def __post_init__(self) -> None:
        if not _is_int(self.max_iter) or self.max_iter < 1:
            _fail(self, "max_iter", self.max_iter, "an integer >= 1")
        if self.tol is not None and not (isinstance(self.tol, (int, float))
                                         and not isinstance(self.tol, bool)
                                         and np.isfinite(self.tol) and self.tol > 0):
            _fail(self, "tol", self.tol, "None or a finite number > 0")
        if isinstance(self.damping, bool) or not isinstance(self.damping, (int, float)) \
                or not 0.0 <= self.damping < 1.0:
            _fail(self, "damping", self.damping, "a number in [0, 1)")
        if self.jacobian not in JACOBIANS:
            _fail(self, "jacobian", self.jacobian, f"one of {JACOBIANS}")
        if not isinstance(self.project, bool):
            _fail(self, "project", self.project, "a bool")
        if self.on_failure not in ON_FAILURE:
            _fail(self, "on_failure", self.on_failure, f"one of {ON_FAILURE}")
        _normalise_dtype(self)

    def tolerance(self, dtype) -> float:
        """`tol`, or the default for memory of `dtype`."""
        if self.tol is not None:
            return float(self.tol)
        bits = jnp.finfo(dtype).bits
        return 1e-10 if bits >= 64 else 1e-5 if bits >= 32 else 1e-2


OPTIONS_TYPES = {"scan": ScanOptions, "hoisted": HoistedOptions,
                 "associative": HoistedOptions, "deer": DeerOptions}

# legacy keyword -> (its old default of `apply`, {backend: options field it sets})
LEGACY = {
    "unroll": (1, {"scan": "unroll", "hoisted": "unroll", "associative": "unroll"}),
    "remat": ("auto", {"scan": "remat", "hoisted": "store_activations",
                       "associative": "store_activations"}),
    "chunk_size": (None, {"scan": "chunk_size", "hoisted": "chunk_size",
                          "associative": "chunk_size"}),
    "compute_dtype": (None, {b: "compute_dtype" for b in OPTIONS_TYPES}),
    "custom_backward": (True, {"hoisted": "custom_backward",
                               "associative": "custom_backward"}),
    "deer_options": (None, {"deer": None}),
}
# the hoisted backends' reading of the legacy remat keyword
REMAT_TO_STORE = {"auto": "auto", "none": True, "step": False, "chunk": False}


def resolve_options(backend: str, options: Any = None, **legacy: Any) -> Any:
    """The options object of the concrete `backend` from ``options=`` or the legacy
    keywords (see the module docstring for the rule).  Raises ValueError."""
    expected = OPTIONS_TYPES[backend]
    given = {name: value for name, value in legacy.items() if value is not None}
    unknown = set(given) - set(LEGACY)
    if unknown:
        raise TypeError(f"unexpected keyword(s) {sorted(unknown)}")
    for name, value in given.items():
        default, fields = LEGACY[name]
        used = backend in fields
        if options is not None:
            where = "is not used by" if not used else "conflicts with options= of"
            raise ValueError(f"{name}={value!r} {where} backend={backend!r}: pass the "
                             f"backend's options in options={expected.__name__}(...) only")
        if not used and not _equal(value, default):
            raise ValueError(f"{name}={value!r} is not used by backend={backend!r} (it "
                             f"takes {expected.__name__}: "
                             f"{[f.name for f in dataclasses.fields(expected)]})")
    if options is not None:
        if not isinstance(options, expected):
            raise ValueError(f"options: backend={backend!r} takes {expected.__name__}, "
                             f"got {type(options).__name__}")
        return options
    if "remat" in given and given["remat"] not in REMAT_MODES:
        raise ValueError(f"remat={given['remat']!r} is invalid: expected one of "
                         f"{REMAT_MODES}")
    base = expected()
    if backend == "deer" and "deer_options" in given:
        base = given["deer_options"]
        if not isinstance(base, DeerOptions):
            raise ValueError(f"deer_options: expected an elm_jax.backends.deer.DeerOptions "
                             f"or None, got {type(base).__name__}")
    fields = {}
    for name, value in given.items():
        field = LEGACY[name][1].get(backend)
        if field is None:
            continue
        if name == "remat" and field == "store_activations":
            value = REMAT_TO_STORE[value]
            if value is True and given.get("custom_backward") is False:
                continue  # the autodiff backward has nothing to store (as before)
        fields[field] = value
    if not fields:
        return base
    return dataclasses.replace(base, **fields)


def _equal(value: Any, default: Any) -> bool:
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:  # noqa: BLE001 - arrays and other odd values: not the default
        return False

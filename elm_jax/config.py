"""Configuration of an ELM neuron: one frozen dataclass, validated on construction.

`ELMConfig` carries every hyperparameter of the reference PyTorch constructor
(github.com/AaronSpieler/elmneuron, `ELM(...)`) plus the choice of variant:

* ``variant="elm"`` -- the paper's Eq. 1 (the reference's v1 code path):
  ``m_t = kappa_m * m_{t-1} + lambda * (1 - kappa_m) * dm_t``.
* ``variant="branch_elm"`` -- the reference's v2 code path: one trace per dendritic
  branch and ``m_t = kappa_m * m_{t-1} + (1 - kappa_lambda) * dm_t`` with
  ``kappa_lambda = exp(-delta_t * lambda / tau_m)``.

Both variants accept branches (``num_branch`` x ``num_synapse_per_branch``) and any
input-to-synapse routing; the variant only selects the memory update (and which traces
``return_states`` reports).  The published NeuronIO checkpoints are ``variant="elm"``
with 45 branches of 100 synapses and the NeuronIO routing, see `PRESETS`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

VARIANTS = ("elm", "branch_elm")
ACTIVATIONS = ("relu", "silu")
ROUTINGS = ("none", "random", "neuronio")

# Names used by the reference implementation's `model_config.json` for the routing.
_REFERENCE_ROUTING_NAMES = {
    None: "none",
    "none": "none",
    "random_routing": "random",
    "random": "random",
    "neuronio_routing": "neuronio",
    "neuronio": "neuronio",
}


#: The reference constructor's name of the trace time constant tells its code version:
#: ``tau_s_value`` (v1 code, ``variant="elm"``), ``tau_b_value`` (v2, ``"branch_elm"``).
REFERENCE_TRACE_KEYS = {"tau_s_value": "elm", "tau_b_value": "branch_elm"}


def reference_trace_key(model_config: Mapping[str, Any]) -> str | None:
    """The trace-constant key a reference ``model_config`` names (see
    `REFERENCE_TRACE_KEYS`), or None; ValueError if it names both."""
    named = [key for key in REFERENCE_TRACE_KEYS if key in model_config]
    if len(named) > 1:
        raise ValueError("reference model_config names both tau_s_value (v1 code) and "
                         "tau_b_value (v2 code): expected one of them")
    return named[0] if named else None


#: Largest accepted memory_tau_max (ms); see `ELMConfig._validate`.
MAX_MEMORY_TAU = 1e10


def _table_entries(values) -> tuple[int, ...]:
    """`routing_table` as a tuple of ints; a non-integral entry (e.g. -0.5) is an error,
    never truncated."""
    entries = []
    for k, value in enumerate(values):
        try:
            ok = not isinstance(value, bool) and float(value) == int(value)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            _fail("routing_table", f"<entry {k}: {value!r}>",
                  "integer input indices (or -1 for an empty slot)")
        entries.append(int(value))
    return tuple(entries)


def _fail(field: str, value: Any, expected: str) -> None:
    raise ValueError(f"ELMConfig.{field}={value!r} is invalid: expected {expected}")


@dataclasses.dataclass(frozen=True)
class ELMConfig:
    """Hyperparameters of one ELM neuron (immutable, hashable, usable as a jit static arg).

    Attributes:
      num_input: number of input channels ``d_in`` (last axis of ``x``).
      num_output: number of readout outputs ``d_o``.
      num_memory: number of memory units ``d_m``.
      lambda_value: the memory update scale ``lambda`` (> 0).
      mlp_num_layers: hidden layers of the integration MLP (0 = linear integration).
      mlp_hidden_size: width of each hidden layer; ``None`` means ``2 * num_memory``.
      mlp_activation: ``"relu"`` or ``"silu"``.
      tau_s: time constant (ms) of the synaptic / branch traces (fixed, not learned).
        The reference calls it ``tau_s_value`` (v1) or ``tau_b_value`` (v2).
      memory_tau_min, memory_tau_max: bounds (ms) of the memory time constants; tau_m
        is initialised log-spaced over this range and, if learned, stays inside it
        (memory_tau_max at most `MAX_MEMORY_TAU` = 1e10 ms).
      learn_memory_tau: whether tau_m is trainable (reference default: False).
      w_s_value: initial synapse weight (w_s = relu(w_s_raw) >= 0).
      num_branch: number of dendritic branches ``d_tree``; ``None`` means ``num_input``.
      num_synapse_per_branch: synapses per branch ``d_brch``.
      routing: how inputs feed synapses: ``"none"`` (identity; needs
        ``num_branch * num_synapse_per_branch == num_input``), ``"random"`` (each
        synapse draws an input uniformly with replacement, seeded by ``routing_seed``)
        or ``"neuronio"`` (excitatory/inhibitory inputs interleaved, then overlapping
        windows of ``num_synapse_per_branch`` with stride ``ceil(num_input/num_branch)``).
      routing_seed: seed of the ``"random"`` routing table.
      routing_table: explicit input index of every synapse (``-1`` = empty slot); set
        by `load_torch_checkpoint` so a converted model uses the checkpoint's table.
        Overrides the generated table when given.
      delta_t: time step (ms) between inputs.
      variant: ``"elm"`` (v1 update) or ``"branch_elm"`` (v2 update), see module doc.
      memory_feedback: whether the MLP sees the decayed memory ``kappa_m * m_{t-1}``
        (True: the published ELM).  False gives the *parallel ELM*: the MLP integrates
        only the traces, so the memory update is linear in m and the whole model runs
        as associative scans plus position-wise MLPs (see `elm_jax.backends`).
    """

    num_input: int
    num_output: int
    num_memory: int = 100
    lambda_value: float = 5.0
    mlp_num_layers: int = 1
    mlp_hidden_size: int | None = None
    mlp_activation: str = "relu"
    tau_s: float = 5.0
    memory_tau_min: float = 1.0
    memory_tau_max: float = 1000.0
    learn_memory_tau: bool = False
    w_s_value: float = 0.5
    num_branch: int | None = None
    num_synapse_per_branch: int = 1
    routing: str = "none"
    routing_seed: int = 0
    routing_table: tuple[int, ...] | None = dataclasses.field(default=None, repr=False)
    delta_t: float = 1.0
    variant: str = "elm"
    memory_feedback: bool = True

    def __post_init__(self) -> None:
        # Normalise NumPy scalars to Python numbers and the optional fields, so that
        # equal models compare (and hash) equal.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.bool_):
                object.__setattr__(self, field.name, bool(value))
            elif isinstance(value, np.integer):
                object.__setattr__(self, field.name, int(value))
            elif isinstance(value, np.floating):
                object.__setattr__(self, field.name, float(value))
        if self.mlp_hidden_size is None:
            object.__setattr__(self, "mlp_hidden_size", 2 * _as_int(self.num_memory))
        if self.num_branch is None:
            object.__setattr__(self, "num_branch", _as_int(self.num_input))
        if self.routing_table is not None:
            object.__setattr__(self, "routing_table", _table_entries(self.routing_table))
        self._validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_synapse(self) -> int:
        """Total synapse slots ``num_branch * num_synapse_per_branch``."""
        return self.num_branch * self.num_synapse_per_branch

    @property
    def mlp_input_size(self) -> int:
        """Width of the MLP input ``[branch traces, kappa_m * m]`` (traces only without
        memory feedback)."""
        return self.num_branch + (self.num_memory if self.memory_feedback else 0)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        for name in ("num_input", "num_output", "num_memory", "mlp_hidden_size",
                     "num_branch", "num_synapse_per_branch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                _fail(name, value, "a positive integer")
        if isinstance(self.mlp_num_layers, bool) or not isinstance(self.mlp_num_layers, int) \
                or self.mlp_num_layers < 0:
            _fail("mlp_num_layers", self.mlp_num_layers, "an integer >= 0")
        for name in ("lambda_value", "tau_s", "memory_tau_min", "memory_tau_max",
                     "delta_t"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                _fail(name, value, "a finite number > 0")
        if self.memory_tau_max > MAX_MEMORY_TAU:
            _fail("memory_tau_max", self.memory_tau_max,
                  f"at most {MAX_MEMORY_TAU:g} ms (larger values leave no float64 room "
                  f"between the log-spaced time constants and the bound: the parameters "
                  f"become infinite)")
        if self.memory_tau_min >= self.memory_tau_max:
            _fail("memory_tau_min", self.memory_tau_min,
                  f"a value below memory_tau_max={self.memory_tau_max!r}")
        if isinstance(self.w_s_value, bool) or not isinstance(self.w_s_value, (int, float)) \
                or not math.isfinite(self.w_s_value) or self.w_s_value < 0:
            _fail("w_s_value", self.w_s_value, "a finite number >= 0 (w_s is ReLU-rectified)")
        if not isinstance(self.learn_memory_tau, bool):
            _fail("learn_memory_tau", self.learn_memory_tau, "True or False")
        if not isinstance(self.memory_feedback, bool):
            _fail("memory_feedback", self.memory_feedback, "True or False")
        if self.mlp_activation not in ACTIVATIONS:
            _fail("mlp_activation", self.mlp_activation, f"one of {ACTIVATIONS}")
        if self.variant not in VARIANTS:
            _fail("variant", self.variant, f"one of {VARIANTS}")
        if self.routing not in ROUTINGS:
            _fail("routing", self.routing, f"one of {ROUTINGS}")
        if isinstance(self.routing_seed, bool) or not isinstance(self.routing_seed, int):
            _fail("routing_seed", self.routing_seed, "an integer")
        if self.routing_table is not None:
            table = self.routing_table
            if len(table) != self.num_synapse:
                _fail("routing_table", f"<{len(table)} entries>",
                      f"{self.num_synapse} entries (num_branch * num_synapse_per_branch)")
            bad = [i for i in table if not -1 <= i < self.num_input]
            if bad:
                _fail("routing_table", f"<entry {bad[0]}>",
                      f"input indices in [0, {self.num_input}) or -1 for an empty slot")
            return
        if self.routing == "none" and self.num_synapse != self.num_input:
            _fail("routing", "none",
                  f"a routing that covers the inputs: with routing='none' num_branch * "
                  f"num_synapse_per_branch ({self.num_synapse}) must equal num_input "
                  f"({self.num_input}); use routing='random' or 'neuronio'")
        if self.routing == "random" and self.num_synapse < self.num_input:
            _fail("routing", "random",
                  f"a routing that can cover the inputs: {self.num_synapse} synapses "
                  f"cannot cover {self.num_input} inputs")
        if self.routing == "neuronio":
            if self.num_input % 2:
                _fail("routing", "neuronio",
                      f"an even num_input (excitatory then inhibitory halves), got "
                      f"{self.num_input}")
            stride = math.ceil(self.num_input / self.num_branch)
            if stride > self.num_synapse_per_branch:
                _fail("routing", "neuronio",
                      f"windows that cover the inputs: stride ceil(num_input/num_branch)"
                      f"={stride} exceeds num_synapse_per_branch="
                      f"{self.num_synapse_per_branch}")

    # ------------------------------------------------------------------ conversions
    def replace(self, **changes: Any) -> "ELMConfig":
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field (`from_dict` inverts it)."""
        out = dataclasses.asdict(self)
        if out["routing_table"] is not None:
            out["routing_table"] = list(out["routing_table"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ELMConfig":
        """Build from a dict written by `to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"ELMConfig has no field(s) {unknown}; valid fields: {sorted(names)}")
        data = dict(data)
        if data.get("routing_table") is not None:
            data["routing_table"] = _table_entries(data["routing_table"])
        return cls(**data)

    @classmethod
    def from_reference(cls, model_config: Mapping[str, Any], *, variant: str | None = None,
                       **overrides: Any) -> "ELMConfig":
        """Build from the keyword arguments of the reference PyTorch constructor.

        `model_config` is the content of a reference ``model_config.json`` (keys such as
        ``input_to_synapse_routing="neuronio_routing"``, ``tau_s_value``); absent keys
        take the reference defaults.  The variant follows the reference's code version:
        its v1 code names the trace time constant ``tau_s_value`` (``variant="elm"``, as
        the published checkpoints), its v2 code ``tau_b_value`` (``"branch_elm"``); a
        config with neither is v1.  An explicit `variant` that contradicts the key, or a
        config with both keys, is refused.
        """
        known = {"num_input", "num_output", "num_memory", "lambda_value", "mlp_num_layers",
                 "mlp_hidden_size", "mlp_activation", "tau_s_value", "tau_b_value",
                 "memory_tau_min", "memory_tau_max", "learn_memory_tau", "w_s_value",
                 "num_branch", "num_synapse_per_branch", "input_to_synapse_routing",
                 "delta_t"}
        unknown = sorted(set(model_config) - known)
        if unknown:
            raise ValueError(f"reference model_config has unknown key(s) {unknown}; "
                             f"known keys: {sorted(known)}")
        key = reference_trace_key(model_config)
        implied = REFERENCE_TRACE_KEYS[key] if key else "elm"
        if variant is None:
            variant = implied
        elif key and variant != implied:
            raise ValueError(f"variant={variant!r} contradicts the reference model_config: "
                             f"its {key} comes from the reference's "
                             f"{'v2' if implied == 'branch_elm' else 'v1'} code, "
                             f"variant={implied!r}")
        kwargs = {k: v for k, v in model_config.items()
                  if k not in ("tau_s_value", "tau_b_value", "input_to_synapse_routing")}
        for key in ("tau_s_value", "tau_b_value"):
            if key in model_config:
                kwargs["tau_s"] = float(model_config[key])
        routing = model_config.get("input_to_synapse_routing")
        if routing not in _REFERENCE_ROUTING_NAMES:
            raise ValueError(
                f"reference model_config input_to_synapse_routing={routing!r} is invalid: "
                f"expected one of [None, 'random_routing', 'neuronio_routing']")
        kwargs["routing"] = _REFERENCE_ROUTING_NAMES[routing]
        for key in ("lambda_value", "memory_tau_min", "memory_tau_max", "w_s_value",
                    "delta_t"):
            if key in kwargs:
                kwargs[key] = float(kwargs[key])
        if not kwargs.get("mlp_hidden_size"):
            kwargs["mlp_hidden_size"] = None
        kwargs.update(overrides)
        return cls(variant=variant, **kwargs)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ELMConfig":
        """A named preset (see `PRESETS`), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown ELMConfig preset {name!r}; valid presets: "
                             f"{sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


def _as_int(value: Any) -> Any:
    return value if isinstance(value, int) else 0


def _neuronio_branch(num_memory: int, **kw: Any) -> ELMConfig:
    """The released NeuronIO Branch-ELMs: 45 branches x 100 synapses, tau_m 1-150 ms."""
    base = dict(num_input=1278, num_output=2, num_memory=num_memory, lambda_value=5.0,
                memory_tau_min=1.0, memory_tau_max=150.0, num_branch=45,
                num_synapse_per_branch=100, routing="neuronio", variant="elm")
    base.update(kw)
    return ELMConfig(**base)


#: Named presets.  ``neuronio_branch_dm{N}`` are the released PyTorch NeuronIO models
#: (v1 code path with branches, lambda 5, tau_m 1-150 ms fixed); ``neuronio_best`` is the
#: released "best effort" model (d_m 100, SiLU).  ``paper_neuronio_elm`` is the paper's
#: Table S1 vanilla ELM (d_m 20, lambda 10; tau_m 1-150 ms as in the figure captions) and
#: ``paper_neuronio_branch_elm_v2`` the Branch-ELM in the improved (kappa_lambda) form.
PRESETS: dict[str, ELMConfig] = {
    **{f"neuronio_branch_dm{n}": _neuronio_branch(n)
       for n in (1, 2, 3, 5, 7, 10, 15, 20, 25, 30, 40, 50, 75, 100)},
    "neuronio_best": _neuronio_branch(100, mlp_activation="silu"),
    "paper_neuronio_elm": ELMConfig(num_input=1278, num_output=2, num_memory=20,
                                    lambda_value=10.0, memory_tau_min=1.0,
                                    memory_tau_max=150.0, learn_memory_tau=True),
    "paper_neuronio_branch_elm_v2": _neuronio_branch(15, variant="branch_elm",
                                                     learn_memory_tau=True),
}

"""elm_jax: the Expressive Leaky Memory (ELM) neuron in JAX and Flax.

Public API (shapes follow one convention, ``(batch, time, features)``):

* `ELMConfig`, `PRESETS` -- frozen, validated hyperparameters.
* `init_params`, `count_params`, `trainable_mask` -- the parameter pytree.
* `step`, `initial_state`, `ELMState` -- one time step as a pure function;
  `prepare` (the per-sequence constants, `Dynamics`) and `step_prepared` (a step on
  them) for loops that should not re-derive the constants every step.
* `apply` -- a whole sequence with `jax.lax.scan`.
* `SpikeEvents` -- sparse spike input for `apply` (padded per-sequence event lists).
* `load_torch_checkpoint` -- published PyTorch checkpoints, without torch.
* `ELMCell`, `ELMSequence` (Flax linen) and `NNXELM` (Flax NNX) -- thin shells.
"""

from .apply import apply
from .checkpoints.convert import load_torch_checkpoint
from .config import ELMConfig, PRESETS
from .core import Dynamics, ELMState, initial_state, prepare, step, step_prepared
from .events import SpikeEvents
from .modules import ELMCell, ELMSequence, NNXELM
from .params import check_params, count_params, init_params, trainable_mask

__version__ = "0.1.0"

__all__ = [
    "Dynamics", "ELMCell", "ELMConfig", "ELMSequence", "ELMState", "NNXELM", "PRESETS", "SpikeEvents", "apply", "check_params", "count_params",
    "init_params", "initial_state", "load_torch_checkpoint", "prepare", "step", "step_prepared", "trainable_mask", "__version__",
]

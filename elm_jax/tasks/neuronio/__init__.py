"""The NeuronIO task family (Beniaguev, Segev & London 2021): everything about it.

* `formats` -- the original file format: constants, `NeuronIOData`, the targets;
* `reader` -- discovery, the strict pickle reader, the ``.npz`` cache;
* `sampler` -- `WindowSampler`, seeded training windows;
* `teacher` -- teacher neurons (dendritic, LIF, ALIF) that write data in the format;
* `synthetic_input` -- NeuronIO-like random spike input (demos, benchmarks);
* `evaluation` -- the published evaluation (AUC, TP @ FP, soma RMSE) and its plots;
* `task` -- the ``neuronio`` task and its presets (registered on import);
* `cli` -- ``elm-jax neuronio-teacher`` and ``elm-jax neuronio-eval``.
"""

from .formats import (FILE_GLOBS, IGNORE_TIME_FROM_START_MS, SPLIT_FOLDERS, WINDOW_MS,
                      Y_SOMA_THRESHOLD, Y_TRAIN_SOMA_BIAS, Y_TRAIN_SOMA_SCALE, NeuronIOData,
                      NeuronIOFormatError, soma_eval_target, soma_train_target)
from .reader import (find_files, load_file, load_files, parse_experiment, prepare_cache,
                     read_neuronio_pickle)
from .sampler import INPUT_FORMATS, WindowSampler
from .task import PRESETS, TASK, NeuronIOTaskConfig, final_evaluation, neuronio_loss

__all__ = [
    "FILE_GLOBS", "IGNORE_TIME_FROM_START_MS", "INPUT_FORMATS", "NeuronIOData",
    "NeuronIOFormatError", "NeuronIOTaskConfig", "PRESETS", "SPLIT_FOLDERS", "TASK",
    "WINDOW_MS", "WindowSampler", "Y_SOMA_THRESHOLD", "Y_TRAIN_SOMA_BIAS",
    "Y_TRAIN_SOMA_SCALE", "final_evaluation", "find_files", "load_file", "load_files",
    "neuronio_loss", "parse_experiment", "prepare_cache", "read_neuronio_pickle",
    "soma_eval_target", "soma_train_target",
]

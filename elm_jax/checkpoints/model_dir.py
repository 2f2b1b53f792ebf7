"""A converted or trained model on disk: ``config.json`` plus an Orbax ``params/`` tree.

Layout of a model directory::

    DIR/config.json   {"format": "elm_jax.model/1", "config": config.to_dict()}
                      (an ELMConfig; an LSTMConfig or TwoTowerConfig with "kind")
    DIR/params/       Orbax StandardCheckpointer tree of the parameter dict
    DIR/manifest.json size and sha256 of every other file (`elm_jax.fileio`)

`save_model` writes all three into a temporary sibling directory (the manifest last,
once the parameters are on disk) and renames it into place, so a crash never leaves a
half-written model at ``DIR``.  In a multi-process JAX run (``jax.process_count() >
1``) `save_model` and `load_model` must be called by every process with the same
directory (Orbax synchronises them): all write the parameters into one staging
directory, process 0 alone writes ``config.json`` and the manifest and renames it into
place, and every process returns once the directory is complete.  `load_model` checks every file against the manifest: a
corrupt (e.g. flipped byte) or missing file raises `CorruptFilesError` (a ValueError)
naming it; a directory without a manifest (written before manifests existed) loads
with an `UnverifiedFilesWarning`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax

from ..fileio import (
    make_private_dir_public,
    strict_json,
    verify_manifest,
    write_manifest,
)
from ..models import ModelConfig, check_model_params, model_config_from_dict
from ..params import Params

FORMAT = "elm_jax.model/1"


def _checkpointer():
    import orbax.checkpoint as ocp  # imported lazily: it is slow to import

    return ocp.StandardCheckpointer()


def save_model(directory: str | os.PathLike, config: ModelConfig, params: Params, *,
               overwrite: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write `config` and `params` to `directory` atomically.

    Args:
      directory: target model directory (must not exist unless `overwrite`).
      config: the model configuration.
      params: parameter dict matching `config`.
      overwrite: replace an existing directory.
      extra: optional JSON-serialisable metadata stored in config.json.
    Returns: the directory path.
    """
    target = Path(directory).absolute()  # Orbax needs absolute paths
    check_model_params(params, config)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    if jax.process_count() > 1:
        _save_multiprocess(target, config, params, extra)
        return target
    staging = make_private_dir_public(
        tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_staging(staging, config, params, extra)
        _replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_config(staging: Path, config: ModelConfig, extra: dict[str, Any] | None) -> None:
    meta = {"format": FORMAT, "config": config.to_dict(), **(extra or {})}
    (staging / "config.json").write_text(strict_json(meta, indent=1))


def _save_params(staging: Path, params: Params) -> None:
    checkpointer = _checkpointer()
    checkpointer.save(staging / "params", jax.device_get(params))
    checkpointer.wait_until_finished()


def _write_staging(staging: Path, config: ModelConfig, params: Params,
                   extra: dict[str, Any] | None) -> None:
    _write_config(staging, config, extra)
    _save_params(staging, params)
    write_manifest(staging)


def _replace(staging: Path, target: Path) -> None:
    """Rename the complete `staging` directory to `target` (replacing it)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def _barrier(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _save_multiprocess(target: Path, config: ModelConfig, params: Params,
                       extra: dict[str, Any] | None) -> None:
    """`save_model` in a multi-process run: every process calls it with the same path.

    The staging directory has a fixed name (all processes must give Orbax one path; the
    work directory's lock keeps other runs out); process 0 (re)creates it, every process
    saves the parameters (Orbax: process 0 writes replicated values, then all synchronise),
    process 0 writes config.json and the manifest and renames it into place, and a last
    barrier makes the directory visible to all before any returns.
    """
    main = jax.process_index() == 0
    staging = target.with_name(f".{target.name}.tmp-multiprocess")
    key = f"elm_jax.save_model:{target}"
    if main:
        if staging.exists():  # left by a killed run
            shutil.rmtree(staging)
        staging.mkdir()
    _barrier(f"{key}:staging")
    try:
        _save_params(staging, params)
        if main:
            _write_config(staging, config, extra)
            write_manifest(staging)
            _replace(staging, target)
    finally:
        if main and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    _barrier(f"{key}:done")


def read_model_config(directory: str | os.PathLike) -> ModelConfig:
    """The model config (`ELMConfig`, `LSTMConfig` or `TwoTowerConfig`) stored in a model
    directory (ValueError if it is not one)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ValueError(f"{directory} is not an elm_jax model directory: {path} is missing")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: expected format {FORMAT!r}, got "
                         f"{meta.get('format') if isinstance(meta, dict) else meta!r}")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path} has no \"config\" object (the model's config); "
                         f"the file is damaged or was not written by elm_jax")
    try:
        return model_config_from_dict(meta["config"])
    except (TypeError, KeyError) as err:
        raise ValueError(f"{path}: its \"config\" is not a valid model config: {err}"
                         ) from None


def load_model(directory: str | os.PathLike, config: ModelConfig | None = None
               ) -> tuple[ModelConfig, Params]:
    """Read a model directory written by `save_model`.

    Args:
      directory: the model directory.
      config: if given, the stored config must equal it (ValueError naming the fields
        that differ otherwise).
    Returns: (config, params) with numpy-backed jax arrays on the default device.
    Raises: ValueError for a directory that is not a model directory or whose config
      differs; `CorruptFilesError` (a ValueError) naming the files that do not match
      ``manifest.json``.
    """
    stored = read_model_config(directory)
    if config is not None and config != stored:
        a, b = stored.to_dict(), config.to_dict()
        diff = [f"{k}: stored {a.get(k, '<absent>')!r} vs requested {b.get(k, '<absent>')!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k) and k != "routing_table"]
        if a.get("routing_table") != b.get("routing_table"):
            diff.append("routing_table differs")
        raise ValueError(f"checkpoint {directory} was saved with another config: "
                         + "; ".join(diff))
    verify_manifest(directory, "model directory")
    params_dir = Path(directory) / "params"
    try:
        restored = _checkpointer().restore(params_dir.absolute())
    except Exception as err:  # orbax raises several types for corrupt trees
        raise ValueError(f"could not read parameters from {params_dir}: {err}") from None
    restored = _as_param_dict(restored)
    try:
        check_model_params(restored, stored)
    except ValueError as err:
        raise ValueError(f"{params_dir} does not match its config.json: {err}") from None
    return stored, restored


def _as_param_dict(tree: Any) -> Params:
    # Orbax may restore lists as dicts keyed "0", "1", ...: normalise the MLP to a list.
    mlp = tree.get("mlp") if isinstance(tree, dict) else None
    if isinstance(mlp, dict):
        tree = dict(tree, mlp=[mlp[k] for k in sorted(mlp, key=int)])
    return jax.tree_util.tree_map(jax.numpy.asarray, tree)

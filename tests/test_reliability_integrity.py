"""Integrity manifests: a flipped byte or a missing file of a model directory or a
training checkpoint is detected and named; ``--resume`` skips a damaged newest
checkpoint and then equals an uninterrupted run; directories without a manifest (from
earlier versions) load with a warning."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_config

import elm_jax
from elm_jax.checkpoints.model_dir import load_model, save_model
from elm_jax.cli import main
from elm_jax.fileio import MANIFEST, CorruptFilesError, UnverifiedFilesWarning
from elm_jax.train.checkpointing import RunCheckpoints
from elm_jax.train.observe import read_jsonl, strip_timing
from elm_jax.train.trainer import Trainer, resolve_run


def _flip(path, offset=None):
    """Flip one byte of a file (in the middle by default)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _data_file(directory):
    """The biggest file of an Orbax tree (the one that holds the array data)."""
    return max((p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST),
               key=lambda p: p.stat().st_size)


@pytest.fixture
def model_dir(tmp_path):
    config = make_config("random", "elm", 1, "relu")
    params = elm_jax.init_params(jax.random.key(0), config)
    return save_model(tmp_path / "model", config, params), config


def test_a_flipped_byte_in_a_model_directory_is_named(model_dir, tmp_path, capsys):
    directory, config = model_dir
    assert json.loads((directory / MANIFEST).read_text())["files"]["config.json"]["size"] > 0
    load_model(directory)                                     # intact: loads
    victim = _data_file(directory / "params")
    _flip(victim)
    with pytest.raises(CorruptFilesError, match=f"{victim} is corrupt"):
        load_model(directory)
    np.save(tmp_path / "x.npy", np.zeros((1, 5, config.num_input), np.float32))
    code = main(["predict", "--checkpoint", str(directory), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npy")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("elm-jax predict: error: model directory") and str(victim) in err
    assert not (tmp_path / "y.npy").exists()


def test_a_missing_file_and_an_old_model_directory_without_manifest(model_dir):
    directory, config = model_dir
    victim = _data_file(directory / "params")
    kept = victim.read_bytes()
    victim.unlink()
    with pytest.raises(ValueError, match=f"{victim} is missing"):
        load_model(directory)
    victim.write_bytes(kept)
    (directory / MANIFEST).unlink()                           # as written before manifests
    with pytest.warns(UnverifiedFilesWarning, match="no manifest.json .* not verified"):
        loaded, _ = load_model(directory)
    assert loaded == config


def test_model_directories_respect_the_umask(model_dir):
    import os

    directory, _ = model_dir
    umask = os.umask(0)
    os.umask(umask)
    assert directory.stat().st_mode & 0o777 == 0o777 & ~umask


STATE = {"step": jnp.int32(5), "params": {"w": jnp.arange(4.0, dtype=jnp.float32)}}


def _two_checkpoints(directory, manifest=True):
    ckpts = RunCheckpoints(directory, keep=3, best_metric="loss", best_mode="min")
    ckpts.save(5, STATE, {"step": 5})
    ckpts.save(10, {"step": jnp.int32(10), "params": {"w": jnp.ones(4, jnp.float32)}},
               {"step": 10})
    ckpts.close()
    if not manifest:
        for step in (5, 10):
            (directory / str(step) / MANIFEST).unlink()


def _flip_data(step_dir):
    _flip(_data_file(step_dir / "state"))


def _empty(step_dir):
    shutil.rmtree(step_dir)
    step_dir.mkdir()


def _no_state(step_dir):
    shutil.rmtree(step_dir / "state")


def _truncated_metadata(step_dir):
    path = step_dir / "state" / "_METADATA"
    path.write_bytes(path.read_bytes()[:40])


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
@pytest.mark.parametrize("damage", [_flip_data, _empty, _no_state, _truncated_metadata])
def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, damage, manifest):
    _two_checkpoints(tmp_path, manifest)
    damage(tmp_path / "10")
    ckpts = RunCheckpoints(tmp_path, keep=3, best_metric="loss", best_mode="min")
    step, meta, state, notes = ckpts.restore_latest(STATE)
    assert step == 5 and meta == {"step": 5} and int(state["step"]) == 5
    np.testing.assert_array_equal(state["params"]["w"], np.arange(4.0))
    assert notes[0].startswith(f"skipped damaged checkpoint {tmp_path / '10'} (")
    assert notes[1] == "resuming from the newest intact checkpoint, step 5"
    assert ("not verified" in " ".join(notes)) is not manifest
    # set aside, so that the resumed run can write step 10 again
    assert ckpts.steps() == [5] and (tmp_path.with_name(tmp_path.name + ".damaged") / "10").is_dir()
    assert ckpts.save(10, STATE, {"step": 10}) and ckpts.steps() == [5, 10]
    ckpts.close()


def test_no_intact_checkpoint_fails_naming_each(tmp_path):
    _two_checkpoints(tmp_path)
    _flip_data(tmp_path / "10")
    _no_state(tmp_path / "5")
    ckpts = RunCheckpoints(tmp_path, keep=3, best_metric="loss", best_mode="min")
    with pytest.raises(CorruptFilesError) as info:
        ckpts.restore_latest(STATE)
    message = str(info.value)
    assert f"no intact checkpoint in {tmp_path}" in message
    assert "step 10:" in message and "is corrupt" in message
    assert "step 5:" in message and f"{tmp_path / '5' / 'state' / '_METADATA'} is missing" in message
    assert ckpts.steps() == [5, 10]          # nothing moved when nothing could be used
    ckpts.close()


#: A 12-step run: checkpoints at 4, 8, 12 and at 6 (the first evaluation's best); the
#: latest 3 are kept.
RUN = ["train.steps=12", "train.eval_every=6", "train.checkpoint_every=4",
       "train.log_every=1", "train.keep_checkpoints=3", "task.seq_len=20",
       "task.val_size=16", "task.test_size=16", "train.input_dropout=0.1"]


def _fit(workdir, **kwargs):
    task, run = resolve_run("adding", "tiny", RUN)
    return Trainer(task, run, workdir, progress=False, **kwargs).fit()


def test_resume_past_a_flipped_byte_equals_an_uninterrupted_run(tmp_path, capsys):
    """The work directory of a run killed after its checkpoint of step 8 (a copy of the
    uninterrupted run without its later outputs), whose checkpoint 8 then took a
    flipped byte: --resume falls back to step 6 and ends equal to the uninterrupted run."""
    reference, work = tmp_path / "reference", tmp_path / "work"
    ref_report = _fit(reference)
    assert sorted(int(p.name) for p in (reference / "checkpoints").iterdir()) == [6, 8, 12]
    shutil.copytree(reference, work)
    for name in ("checkpoints/12", "final_model", "report.json"):
        shutil.rmtree(work / name) if (work / name).is_dir() else (work / name).unlink()
    _flip_data(work / "checkpoints" / "8")
    capsys.readouterr()
    report = _fit(work, resume=True)
    err = capsys.readouterr().err
    assert f"warning: skipped damaged checkpoint {work / 'checkpoints' / '8'}" in err
    assert "resuming from the newest intact checkpoint, step 6" in err
    assert report["status"] == "completed" and report["resumed_from"] == 6
    assert any("step 6" in w for w in report["warnings"])
    for name in ("final_model", "best_model"):
        for a, b in zip(jax.tree_util.tree_leaves(load_model(reference / name)[1]),
                        jax.tree_util.tree_leaves(load_model(work / name)[1]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert strip_timing(read_jsonl(work / "metrics.jsonl")) == \
        strip_timing(read_jsonl(reference / "metrics.jsonl"))
    assert report["test"] == ref_report["test"]
    assert (work / "checkpoints" / "8" / MANIFEST).exists()      # written again, intact
    assert not (work / ".lock").exists() and not (reference / ".lock").exists()

"""CLI user errors: each exits with code 2 and one line on stderr (no traceback),
naming the argument or file; a failed write (full disk) loses nothing."""

from __future__ import annotations

import errno
import json
import shutil

import jax
import numpy as np
import pytest
from helpers import make_config

import elm_jax
from elm_jax.checkpoints.model_dir import save_model
from elm_jax.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model directory and inputs of every shape."""
    root = tmp_path_factory.mktemp("cli")
    config = make_config("random", "elm", 1, "relu")
    save_model(root / "model", config, elm_jax.init_params(jax.random.key(0), config))
    n = config.num_input
    np.save(root / "x.npy", np.zeros((2, 5, n), np.float32))
    np.savez(root / "x.npz", x=np.zeros((2, 5, n), np.float32))
    np.save(root / "t0.npy", np.zeros((2, 0, n), np.float32))
    np.save(root / "b0.npy", np.zeros((0, 5, n), np.float32))
    (root / "folder").mkdir()
    (root / "folder" / "model.pt").write_bytes(b"")
    shutil.copytree(root / "model", root / "no_key")
    (root / "no_key" / "config.json").write_text(json.dumps({"format": "elm_jax.model/1"}))
    return root


def _user_error(capsys, args, *fragments):
    """Run the CLI; assert exit 2 and one stderr line holding every fragment."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"elm-jax {args[0]}: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _predict(files, input_name, *extra):
    return ["predict", "--checkpoint", files / "model", "--input", files / input_name,
            "--output", files / "y", *extra]


def test_predict_refuses_bad_inputs_in_one_line(files, capsys):
    _user_error(capsys, _predict(files, "x.npz"), "x.npz is an .npz archive (arrays ['x'])",
                "takes one .npy array")
    _user_error(capsys, _predict(files, "t0.npy"), "has shape (2, 0, 5)",
                "at least one sequence and one time step")
    _user_error(capsys, _predict(files, "b0.npy"), "has shape (0, 5, 5)")
    _user_error(capsys, _predict(files, "x.npy", "--batch-size", "0"),
                "--batch-size must be a positive integer, got 0")
    _user_error(capsys, _predict(files, "folder"), "folder is not a readable .npy array")
    _user_error(capsys, ["predict", "--checkpoint", files / "no_key", "--input",
                         files / "x.npy", "--output", files / "y"],
                "config.json has no \"config\" object")
    assert not (files / "y.npy").exists()


def test_predict_names_the_files_it_wrote(files, capsys):
    assert main([str(a) for a in _predict(files, "x.npy", "--states", files / "s")]) == 0
    out = capsys.readouterr().out
    assert out.strip() == (f"wrote {files / 'y.npy'}: y (2, 5, 3); "
                           f"{files / 's.npz'}: memory (2, 5, 4)")
    assert np.load(files / "y.npy").shape == (2, 5, 3)
    assert np.load(files / "s.npz")["memory"].shape == (2, 5, 4)


def test_a_full_disk_is_one_line_and_keeps_the_previous_output(files, capsys, monkeypatch):
    from elm_jax import fileio

    np.save(files / "y.npy", np.full(3, 7.0))                 # an earlier result

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    _user_error(capsys, _predict(files, "x.npy"), "No space left on device")
    np.testing.assert_array_equal(np.load(files / "y.npy"), np.full(3, 7.0))
    assert not list(files.glob(".y.npy.*"))                   # no temporary file left


def test_convert_refuses_a_directory(files, capsys):
    _user_error(capsys, ["convert", "--torch-checkpoint", files / "folder", "--config",
                         files / "model" / "config.json", "--out", files / "o"],
                f"torch checkpoint {files / 'folder'} is a directory", "model.pt")
    _user_error(capsys, ["convert", "--torch-checkpoint", files / "x.npy", "--config",
                         files / "model", "--out", files / "o"],
                f"model config {files / 'model'} is a directory")
    assert not (files / "o").exists()


@pytest.mark.parametrize("setting, message", [
    ("model.backend=gpu", "model.backend='gpu' is invalid: expected one of ('auto', 'scan'"),
    ("model.remat=bad", "model.remat='bad' is invalid"),
    ("train.on_nonfinite=ignore", "train.on_nonfinite='ignore' is invalid"),
])
def test_bad_model_options_are_refused_before_the_workdir_exists(tmp_path, capsys, setting,
                                                                 message):
    _user_error(capsys, ["train", "--task", "adding", "--preset", "tiny", "--workdir",
                         tmp_path / "run", "--no-progress", "--set", "train.steps=2", setting],
                message)
    assert not (tmp_path / "run").exists()


def test_nonfinite_inputs_warn_or_are_refused(files, capsys):
    x = np.zeros((2, 5, 5), np.float32)
    x[1, 3, 2] = np.nan
    np.save(files / "nan.npy", x)
    assert main([str(a) for a in _predict(files, "nan.npy")]) == 0
    err = capsys.readouterr().err
    assert "warning: input" in err and "1 NaN/inf entries (the first at index (1, 3, 2))" in err
    y = np.load(files / "y.npy")
    assert np.isfinite(y[0]).all() and np.isnan(y[1, 3:]).all()   # as the warning says
    _user_error(capsys, _predict(files, "nan.npy", "--check-finite"),
                "--check-finite refuses such inputs")


def test_eval_names_a_model_directory_with_a_broken_config(files, capsys):
    broken = files / "broken"
    shutil.copytree(files / "model", broken)
    (broken / "config.json").write_text("{not json")
    _user_error(capsys, ["eval", "--checkpoint", broken, "--task", "adding"],
                f"{broken / 'config.json'} is not valid JSON")

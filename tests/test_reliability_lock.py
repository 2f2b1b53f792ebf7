"""The work-directory lock: a second process is refused naming the holder, a stale lock
of a killed process is taken over, the lock is released on exceptions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elm_jax.cli import main
from elm_jax.train.lock import LOCK_NAME, WorkdirLock, WorkdirLocked

LOCK_PY = Path(__file__).resolve().parents[1] / "elm_jax" / "train" / "lock.py"
#: The holder loads lock.py alone (importing elm_jax would import JAX: seconds).
HOLD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
WorkdirLock = module.WorkdirLock
lock = WorkdirLock(sys.argv[1], command=["holder"]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of ``tmp_path / "run"``."""
    workdir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir), str(LOCK_PY)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield workdir, proc
    finally:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_is_refused_naming_the_holder(holder):
    workdir, proc = holder
    with pytest.raises(WorkdirLocked) as info:
        WorkdirLock(workdir).acquire()
    message = str(info.value)
    assert f"pid {proc.pid}" in message and socket.gethostname() in message
    assert time.strftime("%Y-%m-%d") in message and str(workdir / LOCK_NAME) in message
    assert "delete" not in message            # the holder runs: no advice to delete it
    # the refused attempt left the holder's lock file untouched
    assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == proc.pid


def test_the_cli_refuses_a_busy_workdir_with_exit_2_and_one_line(holder, capsys):
    workdir, proc = holder
    code = main(["train", "--task", "adding", "--preset", "tiny", "--workdir",
                 str(workdir), "--no-progress", "--resume", "--set", "train.steps=2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("elm-jax train: error:") and f"pid {proc.pid}" in err
    assert not (workdir / "run.json").exists()        # nothing written by the refused run


def test_a_killed_holders_lock_is_taken_over(holder):
    workdir, proc = holder
    proc.send_signal(signal.SIGKILL)               # no handler runs: the file stays
    proc.wait()
    assert (workdir / LOCK_NAME).exists()
    lock = WorkdirLock(workdir).acquire()
    assert lock.took_over is not None and f"pid {proc.pid}" in lock.took_over
    assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == os.getpid()
    with pytest.raises(WorkdirLocked):            # held again: a third one is refused
        WorkdirLock(workdir).acquire()
    lock.release()
    assert not (workdir / LOCK_NAME).exists()


def test_a_lock_file_naming_a_dead_pid_is_taken_over(tmp_path):
    dead = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"pid": dead, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}))
    with WorkdirLock(tmp_path) as lock:
        assert lock.took_over == f"pid {dead} on host {socket.gethostname()} since " \
                                 f"2026-01-01T00:00:00"
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_of_another_host_or_a_reused_pid(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"pid": os.getppid(), "host": "some-other-host", "started": "2026-01-01T00:00:00"}))
    with pytest.raises(WorkdirLocked, match="on host some-other-host .*if that process is "
                                            "no longer running, delete"):
        WorkdirLock(tmp_path).acquire()
    # a live pid on this host whose start time differs from the recorded one: reused
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"pid": os.getppid(), "host": socket.gethostname(), "pid_start": "1",
         "started": "2026-01-01T00:00:00"}))
    if sys.platform.startswith("linux"):
        with WorkdirLock(tmp_path) as lock:
            assert lock.took_over is not None


def test_the_trainer_releases_its_lock_on_an_error(tmp_path):
    from elm_jax.train.trainer import Trainer, resolve_run

    (tmp_path / "run.json").write_text("{}")
    task, run = resolve_run("adding", "tiny", ["train.steps=2"])
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(task, run, tmp_path, progress=False).fit()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_run_refused_after_locking_leaves_no_workdir(tmp_path, monkeypatch):
    from elm_jax.train import trainer

    task, run = trainer.resolve_run("adding", "tiny", ["train.steps=2"])

    def no_data(*args):
        raise ValueError("the task's data folder is empty")

    monkeypatch.setattr(trainer, "task_data", no_data)
    with pytest.raises(ValueError, match="data folder is empty"):
        trainer.Trainer(task, run, tmp_path / "new", progress=False).fit()
    assert not (tmp_path / "new").exists()

"""Multi-process training for real: two ``elm-jax train --distributed`` processes.

Two local processes (`jax.distributed.initialize` with a coordinator on a free localhost
port, one CPU device each, gloo collectives) train ONE run of the ``adding`` task
(tiny preset, shortened); a one-process run of the same config (in the test's process,
on one device) is the reference.

* The losses of every logged step, the validation and the test metrics equal the
  one-process run's to ``RTOL`` (see below); each record is written once, by process 0.
* One ``metrics.jsonl``, ``report.json``, ``best_model/`` and ``final_model/`` (with
  manifests, loadable), no staging directories or lock files left behind.
* (slow) SIGTERM to one process stops both at the same step (checkpoint saved, exit 3);
  resumed, both are killed (SIGKILL) after a checkpoint exists; ``--resume`` in both
  ends the run with the losses of the uninterrupted two-process run.

Every subprocess has a timeout: a hang (e.g. processes waiting at different barriers)
fails the test with both processes' output instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from elm_jax.checkpoints.model_dir import load_model
from elm_jax.train import Trainer, resolve_run
from elm_jax.train.observe import read_jsonl
from helpers import TEST_XLA_FLAGS

TIMEOUT_S = 240
#: The two-process run all-reduces two half-batch gradient sums where the one-process
#: run sums the whole batch on one device: the same arithmetic in another order, so the
#: values differ by float32 rounding (measured: at most 3e-7 relative on the losses and
#: 3e-6 on a small gradient norm after 20 steps).  1e-5 (~80 float32 ulps) leaves room
#: for that drift to grow over the steps while catching any real difference (a wrong
#: batch, a step counted twice, a lost update changes the loss at the 1e-2 level).
RTOL = 1e-5
COMPARED = ("loss", "mse", "grad_norm", "lr")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = TEST_XLA_FLAGS  # one CPU device per process
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def _settings(steps: int, every: int) -> list[str]:
    return ["--task", "adding", "--preset", "tiny", "--no-progress", "--json", "--set",
            f"train.steps={steps}", f"train.eval_every={every}",
            f"train.checkpoint_every={every}", f"train.log_every={every}"]


def _start(workdir: Path, settings: list[str], processes: int, *extra: str,
           env: dict[str, str] | None = None) -> list[tuple[subprocess.Popen, Path]]:
    """Start the processes of one run (stdout+stderr of process I in WORKDIR.logI)."""
    command = [sys.executable, "-m", "elm_jax.cli", "train", "--workdir", str(workdir),
               *settings, *extra]
    if processes > 1:
        command += ["--distributed", "--coordinator-address", f"localhost:{_free_port()}",
                    "--num-processes", str(processes)]
    started = []
    for i in range(processes):
        log = workdir.with_name(f"{workdir.name}.log{i}")
        with open(log, "w") as out:
            ids = ["--process-id", str(i)] if processes > 1 else []
            started.append((subprocess.Popen(command + ids, stdout=out,
                                             stderr=subprocess.STDOUT,
                                             env=env or _env()), log))
    return started


def _logs(procs) -> str:
    return "\n".join(f"--- process {i}:\n{log.read_text()[-3000:]}"
                     for i, (_, log) in enumerate(procs))


def _wait(procs, timeout: float = TIMEOUT_S) -> list[str]:
    """Wait for every process (killing all on a timeout); their output."""
    deadline = time.monotonic() + timeout
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill(procs)
        pytest.fail(f"the run did not finish within {timeout} s (a hang?)\n{_logs(procs)}")
    return [log.read_text() for _, log in procs]


def _kill(procs) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    for proc, _ in procs:
        proc.wait(timeout=30)


def _finished(procs) -> list[str]:
    """Wait for the processes of a run; they must all succeed."""
    outputs = _wait(procs)
    codes = [proc.returncode for proc, _ in procs]
    assert codes == [0] * len(procs), f"exit codes {codes}\n{_logs(procs)}"
    return outputs


def _run(workdir: Path, settings: list[str], processes: int, *extra: str) -> list[str]:
    return _finished(_start(workdir, settings, processes, *extra))


def _one_process(workdir: Path, steps: int, every: int) -> None:
    """The reference: the same run in this process, on one device."""
    task, run = resolve_run("adding", "tiny", [
        f"train.steps={steps}", f"train.eval_every={every}",
        f"train.checkpoint_every={every}", f"train.log_every={every}"])
    report = Trainer(task, run, workdir, devices=jax.devices()[:1], progress=False).fit()
    assert report["status"] == "completed"


def _records(workdir: Path) -> list[dict]:
    return read_jsonl(workdir / "metrics.jsonl")


def _assert_same_metrics(got: list[dict], want: list[dict], rtol: float) -> None:
    """The same records (kind, step, which parameters), in order, with close values."""
    keys = [(r["kind"], r["step"], r.get("params")) for r in got]
    assert keys == [(r["kind"], r["step"], r.get("params")) for r in want]
    for a, b in zip(got, want, strict=True):
        for name in COMPARED:
            if name in b:
                np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=0,
                                           err_msg=f"{name} of {a['kind']} step {a['step']}")


def _assert_written_once(workdir: Path, steps: int, killed: bool = False) -> None:
    """Process 0 wrote the run's files, once; nothing is left behind (but the temporary
    file of an atomic write that a SIGKILL interrupted, e.g. ``.curves.png.*.tmp``)."""
    names = sorted(p.name for p in workdir.iterdir()
                   if not (killed and p.name.startswith(".") and p.name.endswith(".tmp")))
    assert names == ["best_model", "checkpoints", "curves.png", "final_model",
                     "metrics.jsonl", "report.json", "run.json", "tb"], names
    report = json.loads((workdir / "report.json").read_text())
    assert report["status"] == "completed" and report["step"] == steps
    assert report["devices"] == 2
    assert json.loads((workdir / "run.json").read_text())["environment"]["process_count"] == 2
    for which in ("best_model", "final_model"):
        assert (workdir / which / "manifest.json").is_file()
        load_model(workdir / which)  # verifies every file against the manifest
    for step_dir in (workdir / "checkpoints").iterdir():
        assert (step_dir / "manifest.json").is_file(), step_dir


def _check_against_one_process(tmp_path: Path, steps: int, every: int) -> Path:
    settings = _settings(steps, every)
    two, one = tmp_path / "two", tmp_path / "one"
    procs = _start(two, settings, 2)
    _one_process(one, steps, every)  # meanwhile, here
    outputs = _finished(procs)
    _assert_written_once(two, steps)
    records = _records(two)
    assert {r["kind"] for r in records} == {"train", "val", "test"}
    _assert_same_metrics(records, _records(one), RTOL)
    # process 1 trained too (its own report on stdout), but wrote no files of its own
    assert '"status": "completed"' in outputs[1] and "Gloo" in outputs[1]
    return two


def test_two_processes_train_one_run_like_one_process(tmp_path):
    """CI: a short run (two evaluations and checkpoints), no kill."""
    _check_against_one_process(tmp_path, steps=6, every=3)


def _wait_for(path: Path, procs) -> None:
    """Wait until `path` exists (failing if the run ends or hangs first)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
            _kill(procs)
            pytest.fail(f"{path} did not appear\n{_logs(procs)}")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_processes_stopped_killed_and_resumed(tmp_path):
    steps, every = 40, 10
    settings = _settings(steps, every)
    whole = _check_against_one_process(tmp_path, steps, every)
    run, slow = tmp_path / "interrupted", _env(ELM_JAX_DEBUG_STEP_DELAY="0.3")
    # 1. SIGTERM to process 1 only: both stop at the same (logged) step and save it
    procs = _start(run, settings, 2, env=slow)
    _wait_for(run / "checkpoints" / "10" / "manifest.json", procs)
    procs[1][0].send_signal(signal.SIGTERM)
    _wait(procs)
    codes = [proc.returncode for proc, _ in procs]
    assert codes == [3, 3], f"exit codes {codes}\n{_logs(procs)}"  # EXIT_INTERRUPTED
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "interrupted" and report["step"] == 20
    assert "a signal to another process of the run" in procs[0][1].read_text()
    # 2. resumed, then both processes killed (SIGKILL) once checkpoint 30 is complete
    # (its manifest is written after Orbax has committed the step on all processes)
    procs = _start(run, settings, 2, "--resume", env=slow)
    _wait_for(run / "checkpoints" / "30" / "manifest.json", procs)
    _kill(procs)
    # 3. resumed again: both processes pick checkpoint 30 and finish the run
    outputs = _run(run, settings, 2, "--resume")
    report = json.loads((run / "report.json").read_text())
    assert report["resumed_from"] == 30 and report["step"] == steps
    assert "took over the stale lock" in outputs[0]
    _assert_written_once(run, steps, killed=True)
    # the same computation as the uninterrupted two-process run
    _assert_same_metrics(_records(run), _records(whole), rtol=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["--process-id", "1"], "--process-id need(s) --distributed"),
    (["--distributed", "--coordinator-address", "localhost:1", "--num-processes", "2",
      "--process-id", "2"], "--process-id 2 must be in [0, --num-processes 2)"),
])
def test_bad_distributed_options_are_refused_before_anything(tmp_path, capsys, args, message):
    from elm_jax.cli import main

    workdir = tmp_path / "run"
    assert main(["train", "--task", "adding", "--preset", "tiny", "--workdir", str(workdir),
                 *args]) == 2
    assert message in capsys.readouterr().err
    assert not workdir.exists()

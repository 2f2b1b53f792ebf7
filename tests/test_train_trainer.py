"""The trainer end to end: learning, outputs, compile-once, exact resume, interruption,
atomic checkpoints, config mismatches, several devices, bfloat16 at T = 16,384."""

from __future__ import annotations

import gc
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax.jax_compat import jit_cache_size
from elm_jax.checkpoints.model_dir import load_model
from elm_jax.cli import main
from elm_jax.train.checkpointing import RunCheckpoints
from elm_jax.train.observe import read_jsonl, strip_timing
from elm_jax.train.trainer import EXIT_INTERRUPTED, Trainer, resolve_run
from helpers import TEST_XLA_FLAGS

REPO = Path(__file__).resolve().parents[1]

#: A short run with evaluation and checkpoints at steps that do not coincide.
SHORT = ["train.steps=40", "train.eval_every=10", "train.checkpoint_every=15",
         "train.log_every=1", "train.keep_checkpoints=2", "task.seq_len=30",
         "task.val_size=32", "task.test_size=32", "train.input_dropout=0.1"]


def _train(workdir, overrides=SHORT, task="adding", preset="tiny", **kwargs):
    t, run = resolve_run(task, preset, overrides)
    trainer = Trainer(t, run, workdir, progress=False, **kwargs)
    return trainer, trainer.fit()


def _params(model_dir):
    return jax.tree_util.tree_leaves(load_model(model_dir)[1])


def _same_params(a, b):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _records(workdir):
    return strip_timing(read_jsonl(Path(workdir) / "metrics.jsonl"))


def _report(workdir):
    """The report.json of a run (the CLI prints a summary table of it)."""
    return json.loads((Path(workdir) / "report.json").read_text())


def _cli(*args, env=None, **kwargs):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "elm_jax.cli", *args], env=full_env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted SHORT run (shared by the resume tests)."""
    workdir = tmp_path_factory.mktemp("reference")
    trainer, report = _train(workdir)
    return workdir, trainer, report


def test_tiny_adding_learns_and_writes_every_output(tmp_path):
    trainer, report = _train(tmp_path, ["train.eval_every=150", "train.checkpoint_every=150"])
    records = read_jsonl(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert np.mean([r["loss"] for r in train[:3]]) > 5 * np.mean([r["loss"] for r in train[-3:]])
    assert report["status"] == "completed"
    assert report["test"]["mse"] < 0.05 < 1 / 6       # the mean predictor scores 1/6
    assert report["compiled"] == {"train_step": 1, "eval_step": 1}
    assert jit_cache_size(trainer.train_step) == 1 and jit_cache_size(trainer.evaluator.step) == 1
    assert report["num_params"] == 323 and report["tokens_per_s"] > 0
    assert report["wall_time_s"] > report["train_time_s"] > 0
    assert json.loads((tmp_path / "report.json").read_text())["test"] == report["test"]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 0 and run["run"]["train"]["steps"] == 300
    assert run["environment"]["versions"]["jax"] == jax.__version__
    assert "git" in run["environment"]
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    tags = _tensorboard_tags(tmp_path / "tb")
    assert {"train/loss", "train/lr", "val/mse", "test/mse"} <= tags
    config, _ = load_model(tmp_path / "best_model")
    assert config.num_memory == 8
    assert (tmp_path / "final_model" / "config.json").exists()
    assert [r["step"] for r in records if r["kind"] == "val"] == [150, 300]


def _tensorboard_tags(directory):
    """Scalar tags in TFRecord event files, read with tensorboardX's protobufs."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in Path(directory).glob("events.out.tfevents.*"):
        raw = path.read_bytes()
        pos = 0
        while pos + 12 <= len(raw):
            (length,) = struct.unpack("<Q", raw[pos:pos + 8])
            event = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, reference_run):
    ref_dir, _, ref_report = reference_run
    _, report = _train(tmp_path, stop_after_steps=17)
    assert report["status"] == "interrupted" and report["step"] == 17
    assert RunCheckpoints(tmp_path / "checkpoints", keep=2, best_metric="mse",
                          best_mode="min").latest_step() == 17
    with pytest.raises(FileExistsError, match="--resume"):
        _train(tmp_path)
    trainer, report = _train(tmp_path, resume=True)
    assert report["resumed_from"] == 17 and report["status"] == "completed"
    assert jit_cache_size(trainer.train_step) == 1
    _same_params(ref_dir / "final_model", tmp_path / "final_model")
    _same_params(ref_dir / "best_model", tmp_path / "best_model")
    assert _records(tmp_path) == _records(ref_dir)
    assert report["test"] == ref_report["test"] and report["best_val"] == ref_report["best_val"]


def test_sigterm_then_resume_equals_uninterrupted(tmp_path, reference_run):
    """A real signal to the CLI; also shows that a run started in another process
    continues to the same metrics."""
    ref_dir, _, _ = reference_run
    args = ["train", "--task", "adding", "--preset", "tiny", "--set", *SHORT,
            "--workdir", str(tmp_path), "--no-progress"]
    proc = _cli(*args, env={"ELM_JAX_DEBUG_STEP_DELAY": "0.1"})
    deadline = time.monotonic() + 120
    metrics = tmp_path / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists() and any(r["step"] >= 3 for r in read_jsonl(metrics)):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted at step" in out and "--resume" in out      # the summary table
    assert "stopped at step" in err and "(SIGTERM)" in err and "--resume" in err
    stopped = _report(tmp_path)["step"]
    assert 3 <= stopped < 40
    # resumed in this process (the CLI's --resume: test_killed_run_resumes_from_its_last_
    # checkpoint, slow; the resumed run equals the reference run)
    _, report = _train(tmp_path, resume=True)
    assert report["resumed_from"] == stopped
    _same_params(ref_dir / "final_model", tmp_path / "final_model")
    assert _records(tmp_path) == _records(ref_dir)


@pytest.mark.slow  # CI: test_sigterm_then_resume_equals_uninterrupted (a real signal)
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, reference_run):
    ref_dir, _, _ = reference_run
    args = ["train", "--task", "adding", "--preset", "tiny", "--set", *SHORT,
            "--workdir", str(tmp_path), "--no-progress"]
    proc = _cli(*args, env={"ELM_JAX_DEBUG_STEP_DELAY": "0.1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "checkpoints" / "15").exists():
        assert proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.5)
    proc.kill()
    proc.communicate()
    proc = _cli(*args, "--resume")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert _report(tmp_path)["resumed_from"] >= 15
    _same_params(ref_dir / "final_model", tmp_path / "final_model")
    assert _records(tmp_path) == _records(ref_dir)


#: The small kill -9 run: checkpoints every 4 of 12 steps.
KILL = ["train.steps=12", "train.eval_every=6", "train.checkpoint_every=4",
        "train.log_every=1", "train.keep_checkpoints=2", "task.seq_len=20",
        "task.val_size=16", "task.test_size=16", "train.input_dropout=0.1"]


@pytest.mark.slow  # CI: test_sigterm_then_resume_equals_uninterrupted (a real signal)
def test_sigkill_after_the_first_checkpoint_then_resume_equals_uninterrupted(tmp_path):
    """The default-run version of the slow test above: `python -m elm_jax.cli train` is
    killed with SIGKILL (no handler runs) as soon as its first checkpoint (step 4)
    exists; the resumed run ends bit-identical to an uninterrupted one."""
    ref_dir, work = tmp_path / "reference", tmp_path / "killed"
    args = ["train", "--task", "adding", "--preset", "tiny", "--set", *KILL,
            "--workdir", str(work), "--no-progress"]
    proc = _cli(*args, env={"ELM_JAX_DEBUG_STEP_DELAY": "0.25"})
    try:
        deadline = time.monotonic() + 120
        while not (work / "checkpoints" / "4").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        assert proc.poll() is None           # killed mid-run, 8 steps (>= 2 s) left
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "final_model").exists()
    _, ref_report = _train(ref_dir, KILL)
    trainer, report = _train(work, KILL, resume=True)
    assert report["status"] == "completed"
    assert 4 <= report["resumed_from"] < 12
    assert jit_cache_size(trainer.train_step) == 1
    _same_params(ref_dir / "final_model", work / "final_model")
    _same_params(ref_dir / "best_model", work / "best_model")
    assert _records(work) == _records(ref_dir)
    assert report["test"] == ref_report["test"] and report["best_val"] == ref_report["best_val"]


def test_a_failed_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    state = {"step": jnp.int32(5), "params": {"w": jnp.arange(4.0, dtype=jnp.float32)}}
    ckpts = RunCheckpoints(tmp_path, keep=1, best_metric="loss", best_mode="min")
    ckpts.save(5, state, {"step": 5})
    original = ocp.handlers.JsonCheckpointHandler._save_fn

    async def crash(self, *args, **kwargs):  # writing the meta item fails mid-save
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, "_save_fn", crash)
    with pytest.raises(Exception, match="disk full"):
        ckpts.save(10, {"step": jnp.int32(10), "params": {"w": jnp.zeros(4, jnp.float32)}},
                   {"step": 10})
    monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, "_save_fn", original)
    assert ckpts.steps() == [5]
    ckpts.close()
    # A crashed process can also leave a temporary directory behind.
    (tmp_path / "20.orbax-checkpoint-tmp-123").mkdir()
    (tmp_path / "20.orbax-checkpoint-tmp-123" / "junk").write_text("partial")
    reopened = RunCheckpoints(tmp_path, keep=1, best_metric="loss", best_mode="min")
    assert reopened.steps() == [5]
    restored = reopened.restore_state(5, state)
    np.testing.assert_array_equal(restored["params"]["w"], np.arange(4.0))
    assert reopened.restore_meta(5) == {"step": 5}
    assert not (tmp_path / "20.orbax-checkpoint-tmp-123").exists()
    reopened.close()
    with warnings.catch_warnings():  # the coroutine abandoned by the simulated crash
        warnings.simplefilter("ignore")
        gc.collect()


def test_resume_with_a_different_config_names_the_mismatch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)       # a relative --workdir works too
    _, report = _train(tmp_path.name, SHORT, stop_after_steps=2)
    assert report["workdir"] == str(tmp_path)
    with pytest.raises(ValueError, match=r"different config: model.mlp_hidden_size: "
                                         r"checkpoint 16 vs now 8; model.num_memory: "
                                         r"checkpoint 8 vs now 4; train.learning_rate: "
                                         r"checkpoint 0.01 vs now 0.02"):
        _train(tmp_path, [*SHORT, "model.num_memory=4", "train.learning_rate=0.02"],
               resume=True)
    # The checkpoint itself records its config too (checked even without run.json).
    (tmp_path / "run.json").unlink()
    with pytest.raises(ValueError, match=r"checkpoint 2 .* was written with a different "
                                         r"config: task.seq_len: checkpoint 30 vs now 31"):
        _train(tmp_path, [*SHORT, "task.seq_len=31"], resume=True)


def test_eval_cli_reproduces_the_report(tmp_path, reference_run, capsys):
    ref_dir, _, ref_report = reference_run
    assert main(["eval", "--workdir", str(ref_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"] == pytest.approx(ref_report["test"], rel=1e-6)
    assert main(["eval", "--checkpoint", str(ref_dir / "final_model"), "--split", "val"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["mse"] > 0
    assert main(["eval", "--workdir", str(tmp_path)]) == 2
    assert "not an elm_jax run directory" in capsys.readouterr().err


def test_four_cpu_devices_give_the_same_losses_as_one(tmp_path, reference_run):
    script = textwrap.dedent(f"""
        import json, sys, jax
        assert jax.device_count() == 4, jax.devices()
        from elm_jax.train.trainer import Trainer, resolve_run
        t, run = resolve_run("adding", "tiny", {SHORT!r} + ["train.steps=20"])
        report = Trainer(t, run, sys.argv[1], progress=False).fit()
        assert report["devices"] == 4 and report["compiled"]["train_step"] == 1
        print(json.dumps(report["test"]))
    """)
    env = dict(os.environ, XLA_FLAGS=f"{TEST_XLA_FLAGS} "
               "--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "four")], env=env,
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    _, one = _train(tmp_path / "one", [*SHORT, "train.steps=20"])
    four = _records(tmp_path / "four")
    ones = _records(tmp_path / "one")
    assert [r["step"] for r in four] == [r["step"] for r in ones]
    for a, b in zip(four, ones):
        for key in ("loss", "mse", "grad_norm"):
            if key in b:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1])["mse"],
                               one["test"]["mse"], rtol=1e-5)


def test_bfloat16_trains_and_stays_finite_at_16k_steps(tmp_path):
    _, report = _train(tmp_path, ["task.seq_len=16384", "task.val_size=2", "task.test_size=2",
                                  "model.num_memory=2", "model.memory_tau_max=20000",
                                  "model.compute_dtype=bfloat16", "train.batch_size=2",
                                  "train.steps=3", "train.eval_every=3",
                                  "train.checkpoint_every=3", "train.log_every=1"])
    train = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert len(train) == 3 and all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"])
                                   for r in train)
    assert all(r["grad_norm"] > 0 for r in train)
    assert np.isfinite(report["test"]["mse"])
    params = _params(tmp_path / "final_model")
    assert all(np.isfinite(np.asarray(p)).all() for p in params)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["run"]["model_options"]["compute_dtype"] == "bfloat16"


def test_delayed_recall_tiny_beats_chance(tmp_path):
    _, report = _train(tmp_path, ["train.eval_every=200", "train.checkpoint_every=200"],
                       task="delayed_recall")
    assert report["test"]["accuracy"] > 0.6     # chance: 0.25


def test_custom_per_step_task_with_burn_in_loss_and_final_evaluation_hook(tmp_path,
                                                                        monkeypatch):
    """The extension point NeuronIO uses: a per-step head, a custom loss, burn-in
    masking, metrics as functions, io_dims and a final evaluation hook."""
    import dataclasses as dc

    from elm_jax import tasks
    from elm_jax.tasks import register_task

    # a registry of this test's own: the task must not outlive it (the registry test
    # checks every registered task has the built-in presets)
    tasks.list_tasks()                     # load the built-in tasks first
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))
    from elm_jax.tasks.base import Task
    from elm_jax.tasks.run_config import Preset, TrainConfig

    @dc.dataclass(frozen=True)
    class EchoConfig:
        seq_len: int = 24

    class EchoData:
        num_input, num_output = 1, 1

        def __init__(self, cfg, seed):
            self.seq_len, self.seed = cfg.seq_len, seed

        def _batch(self, key, n):
            x = np.random.default_rng([self.seed, *key]).random((n, self.seq_len, 1),
                                                                  dtype=np.float32)
            y = x.copy()
            y[:, :4] = 1e3        # garbage inside the burn-in: must not reach the loss
            return {"x": x, "y": y}

        def train_batch(self, step, batch_size):
            return self._batch((0, step), batch_size)

        def eval_batches(self, split, batch_size):
            yield self._batch((1 if split == "val" else 2, 0), batch_size)

    calls = []

    def final_evaluation(task_config, model_config, params, out_dir, split, apply_kwargs):
        assert apply_kwargs == {}            # the run's model options (none set here)
        calls.append((task_config, model_config.num_memory, split, Path(out_dir).name))
        return {"custom_score": np.float32(0.5)}

    register_task(Task(
        name="echo_test", description="copy the input", config_cls=EchoConfig,
        make_data=EchoData, head="per_step", loss=lambda p, t: jnp.abs(p - t)[..., 0],
        metrics={"sq": lambda p, t: ((p - t) ** 2)[..., 0]},
        presets={"tiny": Preset("test", EchoConfig(), dict(num_memory=4),
                                TrainConfig(steps=30, batch_size=8, learning_rate=1e-2,
                                            burn_in=4, eval_every=15, checkpoint_every=15,
                                            log_every=1))},
        default_preset="tiny", best_metric="sq", io_dims=lambda cfg: (1, 1),
        final_evaluation=final_evaluation), replace=True)
    _, report = _train(tmp_path, [], task="echo_test", preset="tiny")
    train = [r["loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert max(train) < 10 and train[-1] < train[0]          # burn-in steps were masked
    assert report["test"]["sq"] < report["test"]["loss"] < 1
    assert calls == [(EchoConfig(), 4, "test", "final_evaluation")]
    assert report["final_evaluation"] == {"custom_score": 0.5}
    assert json.loads((tmp_path / "report.json").read_text())["final_evaluation"] == \
        {"custom_score": 0.5}


def test_input_dropout_and_put_batch_take_spike_events():
    from elm_jax.events import SpikeEvents
    from elm_jax.train.parallel import batch_sharding, make_mesh, put_batch
    from elm_jax.train.trainer import _input_dropout

    x = np.zeros((2, 50, 8), np.int8)
    x[:, ::2, 3], x[1, 1::2, 5] = 1, -1
    events = SpikeEvents.from_dense(x, capacity=60, dtype=np.int8)
    batch = put_batch({"x": events, "y": np.ones((2, 50))}, batch_sharding(make_mesh()))
    assert isinstance(batch["x"], SpikeEvents) and isinstance(batch["x"].time, jax.Array)
    np.testing.assert_array_equal(batch["x"].to_dense(), x)
    dropped = jax.jit(_input_dropout, static_argnums=2)(batch["x"], jax.random.key(0), 0.5)
    value = np.asarray(dropped.value)
    assert value.dtype == np.float32
    # each event kept (scaled by 2) or dropped; padding stays 0
    np.testing.assert_array_equal(value[events.value == 0], 0)
    kept = (value != 0).sum() / (events.value != 0).sum()
    assert 0.3 < kept < 0.7
    np.testing.assert_array_equal(value[value != 0] / 2, events.value[value != 0])

"""Task registry, synthetic task data, heads and losses."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax.tasks import get_task, list_tasks, register_task
from elm_jax.tasks.base import head_outputs, reduce_per_example, mse, cross_entropy, accuracy
from elm_jax.tasks.synthetic import (AddingConfig, AddingData, DelayedRecallConfig,
                                     DelayedRecallData)


def test_registry_lists_builtin_tasks_and_rejects_unknown_names():
    names = [t.name for t in list_tasks()]
    assert {"adding", "delayed_recall"} <= set(names)
    for task in list_tasks():
        assert {"tiny", "small"} <= set(task.presets)
    with pytest.raises(ValueError, match=r"unknown task 'nope'; valid tasks: .*adding.*"
                                         r"delayed_recall"):
        get_task("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_task(dataclasses.replace(get_task("adding")))


def test_adding_batches_follow_the_definition():
    data = AddingData(AddingConfig(seq_len=100, val_size=40, test_size=70), seed=3)
    batch = data.train_batch(7, 16)
    x, y = batch["x"], batch["y"]
    assert x.shape == (16, 100, 2) and y.shape == (16, 1) and x.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :50].sum(1) == 1).all() and (markers[:, 50:].sum(1) == 1).all()
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(1), rtol=1e-6)
    # A pure function of (seed, step): same step same batch, other steps/seeds differ.
    np.testing.assert_array_equal(data.train_batch(7, 16)["x"], x)
    assert not np.array_equal(data.train_batch(8, 16)["x"], x)
    other = AddingData(AddingConfig(seq_len=100), seed=4).train_batch(7, 16)["x"]
    assert not np.array_equal(other, x)


def test_eval_sets_are_fixed_padded_and_independent_of_batch_size():
    data = AddingData(AddingConfig(seq_len=30, val_size=40, test_size=70), seed=0)
    b16 = list(data.eval_batches("val", 16))
    b40 = list(data.eval_batches("val", 40))
    assert [len(b["x"]) for b in b16] == [16, 16, 16]
    assert b16[-1]["weight"].tolist() == [1.0] * 8 + [0.0] * 8
    assert b40[0]["weight"].sum() == 40
    joined = np.concatenate([b["x"] for b in b16])[:40]
    np.testing.assert_array_equal(joined, b40[0]["x"])
    val = np.concatenate([b["x"] for b in b40])
    test = np.concatenate([b["x"] for b in data.eval_batches("test", 70)])
    assert not np.array_equal(val[:40], test[:40])
    with pytest.raises(ValueError, match="'val' or 'test'"):
        next(data.eval_batches("train", 4))


def test_adding_mean_predictor_scores_one_sixth():
    data = AddingData(AddingConfig(seq_len=20, test_size=4096), seed=0)
    y = np.concatenate([b["y"][:, 0] for b in data.eval_batches("test", 4096)])
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.01


def test_sequence_length_bounds():
    AddingData(AddingConfig(seq_len=16_384, val_size=1, test_size=1), 0).train_batch(0, 1)
    with pytest.raises(ValueError, match="task.seq_len=16385 is invalid"):
        AddingConfig(seq_len=16_385)
    with pytest.raises(ValueError, match="task.num_symbols"):
        DelayedRecallConfig(num_symbols=1)


def test_delayed_recall_batches():
    cfg = DelayedRecallConfig(seq_len=12, num_symbols=5, num_noise_channels=2, noise_rate=0.5)
    data = DelayedRecallData(cfg, seed=1)
    assert (data.num_input, data.num_output) == (8, 5)
    batch = data.train_batch(0, 32)
    x, y = batch["x"], batch["y"]
    assert x.shape == (32, 12, 8) and y.shape == (32,)
    np.testing.assert_array_equal(np.argmax(x[:, 0, :5], -1), y)
    assert (x[:, 0, :5].sum(-1) == 1).all() and (x[:, 1:, :5] == 0).all()
    assert (x[:, -1, 5] == 1).all() and (x[:, :-1, 5] == 0).all()
    assert x[:, 1:-1, 6:].mean() > 0.2   # distractor spikes during the delay only
    assert (x[:, [0, -1], 6:] == 0).all()


def test_heads_and_reductions():
    y = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    assert head_outputs(y, "per_step").shape == (2, 4, 3)
    np.testing.assert_array_equal(head_outputs(y, "last_step"), y[:, -1])
    np.testing.assert_array_equal(head_outputs(y, "last_step", jnp.array([2, 4])),
                                  jnp.stack([y[0, 1], y[1, 3]]))
    values = jnp.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    np.testing.assert_allclose(reduce_per_example(values, "per_step", 2), [3.5, 2.0])
    with pytest.raises(ValueError, match="burn_in"):
        reduce_per_example(values, "per_step", 4)
    pred = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(mse(pred, jnp.zeros((2, 2))), [2.0, 0.5])
    np.testing.assert_array_equal(accuracy(pred, jnp.array([0, 0])), [1.0, 0.0])
    np.testing.assert_allclose(cross_entropy(pred, jnp.array([0, 1])),
                               -jnp.log(jax_softmax(pred)[jnp.arange(2), jnp.array([0, 1])]),
                               rtol=1e-6)


def jax_softmax(x):
    e = jnp.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_a_broken_task_module_does_not_hide_the_other_tasks(tmp_path, monkeypatch):
    import elm_jax.tasks as registry

    (tmp_path / "broken_task_mod.py").write_text("raise RuntimeError('oops')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ELM_JAX_TASK_MODULES", "broken_task_mod")
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_FAILED", {})
    with pytest.warns(RuntimeWarning, match="broken_task_mod failed to import"):
        names = [t.name for t in registry.list_tasks()]
    assert "adding" in names
    with pytest.raises(ValueError, match="task module broken_task_mod failed to import: "
                                         "RuntimeError: oops"):
        registry.get_task("broken")
    monkeypatch.setenv("ELM_JAX_TASK_MODULES", "no_such_module_xyz")
    monkeypatch.setattr(registry, "_loaded", False)
    with pytest.raises(ValueError, match="ELM_JAX_TASK_MODULES names 'no_such_module_xyz'"):
        registry.list_tasks()

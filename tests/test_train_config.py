"""Run configuration, --set parsing, optimizers and the train/eval/tasks CLI errors."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import elm_jax
from elm_jax.cli import main
from elm_jax.tasks.synthetic import AddingConfig
from elm_jax.tasks.run_config import ModelOptions, TrainConfig, parse_overrides
from elm_jax.train.optim import learning_rate_schedule, make_optimizer, param_labels
from elm_jax.train.trainer import resolve_run


def test_overrides_are_parsed_by_field_type():
    out = parse_overrides(["train.learning_rate=2e-3", "train.steps=1e3", "model.num_memory=7",
                           "model.learn_memory_tau=true", "model.mlp_hidden_size=none",
                           "model.backend=hoisted", "task.seq_len=64",
                           "train.lr_groups=tau_m_raw=0.1,readout=2"], AddingConfig)
    assert out["train"] == {"learning_rate": 2e-3, "steps": 1000,
                            "lr_groups": "tau_m_raw=0.1,readout=2"}
    assert out["model"] == {"num_memory": 7, "learn_memory_tau": True, "mlp_hidden_size": None}
    assert out["model_options"] == {"backend": "hoisted"}
    assert out["task"] == {"seq_len": 64}


@pytest.mark.parametrize("item, pattern", [
    ("train.lr=1", r"--set train.lr: unknown key; valid keys: task.seq_len, .*"
                   r"model.num_memory.*train.learning_rate"),
    ("model.num_input=3", r"set by the task from its data"),
    ("train.steps=ten", r"--set train.steps='ten': expected an integer"),
    ("train.steps=1.5", r"expected an integer"),
    ("model.learn_memory_tau=maybe", r"expected a boolean"),
    ("train.learning_rate", r"expected KEY=VALUE"),
])
def test_bad_overrides_list_valid_keys_or_name_the_problem(item, pattern):
    with pytest.raises(ValueError, match=pattern):
        parse_overrides([item], AddingConfig)


def test_resolve_run_builds_the_model_from_task_and_preset():
    task, run = resolve_run("adding", "tiny", ["model.num_memory=5", "task.seq_len=40"])
    assert (run.model.num_input, run.model.num_output, run.model.num_memory) == (2, 1, 5)
    assert run.task.seq_len == 40 and run.train.best_metric == "mse"
    assert run.train.best_mode == "min"
    _, recall = resolve_run("delayed_recall", "tiny", ["task.num_symbols=6"])
    assert (recall.model.num_input, recall.model.num_output) == (7, 6)
    assert recall.train.best_metric == "accuracy" and recall.train.best_mode == "max"
    with pytest.raises(ValueError, match=r"unknown preset 'huge' for task 'adding'; valid "
                                         r"presets: tiny, small, long"):
        resolve_run("adding", "huge")
    with pytest.raises(ValueError, match=r"train.optimizer='sgd' is invalid: expected one of "
                                         r"\('adam', 'adamw', 'adamax'\)"):
        resolve_run("adding", "tiny", ["train.optimizer=sgd"])
    with pytest.raises(ValueError, match=r"ELMConfig.variant='x' is invalid"):
        resolve_run("adding", "tiny", ["model.variant=x"])
    with pytest.raises(ValueError, match=r"train.best_metric='accuracy' is invalid for task "
                                         r"'adding': expected one of \['loss', 'mse'\]"):
        resolve_run("adding", "tiny", ["train.best_metric=accuracy"])


def test_cli_errors_list_valid_choices(capsys, tmp_path):
    assert main(["train", "--task", "nope", "--workdir", str(tmp_path / "w")]) == 2
    assert "valid tasks: adding, delayed_recall" in capsys.readouterr().err
    assert main(["train", "--task", "adding", "--preset", "nope",
                 "--workdir", str(tmp_path / "w")]) == 2
    assert "valid presets: tiny, small, long" in capsys.readouterr().err
    assert main(["train", "--task", "adding", "--set", "train.nope=1",
                 "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "unknown key" in err and "train.learning_rate" in err and "task.seq_len" in err
    assert main(["train", "--task", "adding", "--set", "train.steps=0",
                 "--workdir", str(tmp_path / "w")]) == 2
    assert "train.steps=0 is invalid: expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "adding --preset small:" in out and "delayed_recall --preset tiny:" in out


def test_schedules():
    cos = learning_rate_schedule(TrainConfig(steps=100, learning_rate=1.0, warmup_steps=10,
                                             final_lr_factor=0.1))
    np.testing.assert_allclose([cos(0), cos(10), cos(100)], [0.0, 1.0, 0.1], atol=1e-6)
    assert 0.1 < float(cos(55)) < 1.0
    plain = learning_rate_schedule(TrainConfig(steps=100, learning_rate=1.0))
    np.testing.assert_allclose([plain(0), plain(50), plain(100)], [1.0, 0.5, 0.0], atol=1e-6)
    const = learning_rate_schedule(TrainConfig(steps=100, learning_rate=0.5,
                                               schedule="constant", warmup_steps=4))
    np.testing.assert_allclose([const(2), const(4), const(99)], [0.25, 0.5, 0.5], atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adamax"])
def test_optimizer_groups_scale_learning_rates_and_skip_frozen_leaves(optimizer):
    config = elm_jax.ELMConfig(num_input=2, num_output=1, num_memory=3)
    params = elm_jax.init_params(jax.random.key(0), config)
    cfg = TrainConfig(optimizer=optimizer, learning_rate=0.01, schedule="constant",
                      grad_clip=0.0, lr_groups="readout/kernel=3,mlp/*=0", weight_decay=0.1)
    labels = param_labels(params, config, cfg)
    assert labels["tau_m_raw"] == "frozen" and labels["readout"]["kernel"] == "group0"
    assert labels["mlp"][0]["bias"] == "group1" and labels["w_s_raw"] == "default"
    tx, _ = make_optimizer(cfg, config, params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    # The first Adam(ax) step moves every trained leaf by about lr * factor.
    np.testing.assert_allclose(np.abs(updates["readout"]["kernel"]), 0.03, rtol=0.05)
    np.testing.assert_allclose(np.abs(updates["readout"]["bias"]), 0.01, rtol=0.2)
    assert not np.any(updates["mlp"][0]["kernel"]) and not np.any(updates["tau_m_raw"])
    learned = config.replace(learn_memory_tau=True)
    tx2, _ = make_optimizer(TrainConfig(lr_groups="tau_m_raw=2"), learned, params)
    updates2, _ = tx2.update(grads, tx2.init(params), params)
    assert np.all(updates2["tau_m_raw"] != 0)
    with pytest.raises(ValueError, match="matches no trained parameter"):
        make_optimizer(TrainConfig(lr_groups="nothing=2"), config, params)
    with pytest.raises(ValueError, match="lr_groups"):
        TrainConfig(lr_groups="readout:2")


def test_lr_groups_are_parsed_once_per_config(monkeypatch):
    """TrainConfig parses (and so validates) lr_groups once; the optimizer reuses it."""
    import dataclasses

    from elm_jax.tasks import run_config

    calls = []
    original = run_config.parse_lr_groups

    def counting(text):
        calls.append(text)
        return original(text)

    monkeypatch.setattr(run_config, "parse_lr_groups", counting)
    config = elm_jax.ELMConfig(num_input=2, num_output=1, num_memory=3)
    params = elm_jax.init_params(jax.random.key(0), config)
    cfg = TrainConfig(lr_groups="readout/kernel=3, mlp/*=0")
    assert calls == ["readout/kernel=3, mlp/*=0"]
    assert cfg.lr_group_factors == (("readout/kernel", 3.0), ("mlp/*", 0.0))
    make_optimizer(cfg, config, params)
    param_labels(params, config, cfg)
    assert len(calls) == 1
    # the parsed groups are no field: not in the saved config, not compared
    assert "lr_group_factors" not in dataclasses.asdict(cfg)
    assert cfg == TrainConfig(lr_groups="readout/kernel=3, mlp/*=0")


def test_model_options_pass_only_what_is_set(monkeypatch):
    assert ModelOptions().apply_kwargs() == {}
    kw = ModelOptions(compute_dtype="bfloat16", unroll=2).apply_kwargs()
    assert kw == {"compute_dtype": jnp.bfloat16, "unroll": 2}
    with pytest.raises(ValueError, match="model.compute_dtype='float16' is invalid"):
        ModelOptions(compute_dtype="float16")
    assert ModelOptions(input_path="folded").apply_kwargs() == {"input_path": "folded"}
    with pytest.raises(ValueError, match="model.input_path='sparse' is invalid"):
        ModelOptions(input_path="sparse")

    def old_apply(params, x, config, *, unroll=1, remat="none", compute_dtype=None):
        """An `apply` without the backend option."""

    monkeypatch.setattr(sys.modules["elm_jax.apply"], "apply", old_apply)
    assert ModelOptions(unroll=3).apply_kwargs() == {"unroll": 3}
    with pytest.raises(ValueError, match="model.backend='hoisted': this version of "
                                         "elm_jax.apply has no 'backend' option"):
        ModelOptions(backend="hoisted").apply_kwargs()


def test_optax_state_of_unused_groups_is_fine():
    config = elm_jax.ELMConfig(num_input=2, num_output=1, num_memory=3, learn_memory_tau=True)
    params = elm_jax.init_params(jax.random.key(0), config)
    tx, _ = make_optimizer(TrainConfig(lr_groups="*=0.5"), config, params)
    state = tx.init(params)
    updates, _ = tx.update(jax.tree_util.tree_map(jnp.ones_like, params), state, params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree_util.tree_leaves(updates))
    assert optax.tree.norm(updates) > 0

"""The LSTM model kind: equal to an independent NumPy loop, chrono initialisation,
parameter counts, model directories, and the trainer's ``--set model.kind=lstm``
(learning, exact resume, configuration errors)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax import SpikeEvents
from elm_jax.checkpoints.model_dir import load_model, save_model
from elm_jax.config import ELMConfig
from elm_jax.models import (
    LSTMConfig,
    apply_model,
    count_model_params,
    init_model,
    model_config_from_dict,
)
from elm_jax.train.trainer import Trainer, resolve_run

SHORT = ["model.kind=lstm", "model.lstm_hidden=12", "train.steps=24", "train.eval_every=12",
         "train.checkpoint_every=12", "train.log_every=1", "task.seq_len=12",
         "task.val_size=16", "task.test_size=16", "train.learning_rate=0.02"]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_lstm(params, x):
    """float64 loop of the LSTM equations: gates from input and hidden projections
    (biases on the hidden ones), c = f c + i g, h = o tanh(c), y = h W + b."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    cell = p["cell"]
    batch, steps, _ = x.shape
    hidden = cell["hf"]["kernel"].shape[0]
    h = np.zeros((batch, hidden))
    c = np.zeros((batch, hidden))
    ys = []
    for t in range(steps):
        xt = np.asarray(x[:, t], np.float64)

        def gate(name):
            return (xt @ cell[f"i{name}"]["kernel"] + h @ cell[f"h{name}"]["kernel"]
                    + cell[f"h{name}"]["bias"])

        i, f = _sigmoid(gate("i")), _sigmoid(gate("f"))
        g, o = np.tanh(gate("g")), _sigmoid(gate("o"))
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h @ p["readout"]["kernel"] + p["readout"]["bias"])
    return np.stack(ys, axis=1)


def test_lstm_equals_a_numpy_loop_and_takes_spike_events():
    config = LSTMConfig(num_input=6, num_output=3, hidden=9, chrono_range=(1.0, 50.0))
    params = init_model(jax.random.key(1), config)
    x = np.asarray(jax.random.bernoulli(jax.random.key(2), 0.3, (2, 17, 6)), np.float32)
    y = np.asarray(apply_model(params, x, config, backend="hoisted"))
    assert y.shape == (2, 17, 3)
    np.testing.assert_allclose(y, numpy_lstm(params, x), rtol=1e-5, atol=1e-5)
    b, t, ch = np.nonzero(x)
    events = SpikeEvents(time=np.zeros((2, 40), np.int32), channel=np.zeros((2, 40), np.int32),
                         value=np.zeros((2, 40), np.float32), num_steps=17, num_input=6)
    for row in range(2):
        sel = b == row
        n = int(sel.sum())
        events.time[row, :n], events.channel[row, :n] = t[sel], ch[sel]
        events.value[row, :n] = 1.0
    np.testing.assert_allclose(np.asarray(apply_model(params, events, config)), y, atol=1e-6)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, time, 6\)"):
        apply_model(params, x[..., :5], config)


def test_chrono_initialisation_and_parameter_counts():
    config = LSTMConfig(num_input=16, num_output=2, hidden=150, chrono_range=(1.0, 2000.0))
    params = init_model(jax.random.key(0), config)
    forget = np.asarray(params["cell"]["hf"]["bias"])
    np.testing.assert_array_equal(np.asarray(params["cell"]["hi"]["bias"]), -forget)
    assert forget.min() >= 0.0 and forget.max() <= np.log(2000.0) + 1e-6
    assert forget.std() > 0.5  # spread over the range, not a constant
    plain = init_model(jax.random.key(0), config.replace(chrono_range=None))
    assert not np.any(np.asarray(plain["cell"]["hf"]["bias"]))
    # the paper's LRA Chrono-LSTM size (Table 1 "~100k" on Pathfinder: 16 inputs)
    assert count_model_params(config) == 100_502
    assert count_model_params(config) == sum(a.size for a in jax.tree_util.tree_leaves(params))
    with pytest.raises(ValueError, match="chrono_range"):
        LSTMConfig(num_input=2, num_output=1, chrono_range=(10.0, 5.0))
    with pytest.raises(ValueError, match="LSTMConfig.hidden"):
        LSTMConfig(num_input=2, num_output=1, hidden=0)


def test_lstm_model_directory_round_trip_and_kind_mismatch(tmp_path):
    config = LSTMConfig(num_input=4, num_output=2, hidden=5, chrono_range=(1.0, 30.0))
    params = init_model(jax.random.key(3), config)
    save_model(tmp_path / "m", config, params)
    stored = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert stored["kind"] == "lstm" and model_config_from_dict(stored) == config
    loaded_config, loaded = load_model(tmp_path / "m")
    assert loaded_config == config
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="kind: stored 'lstm'"):
        load_model(tmp_path / "m", ELMConfig(num_input=4, num_output=2, num_memory=3))
    with pytest.raises(ValueError, match=r"params\['cell'\]\['hf'\]\['bias'\]: expected shape \(6,\)"):
        save_model(tmp_path / "bad", config.replace(hidden=6), params)


def test_model_kind_settings_are_checked():
    _, run = resolve_run("adding", "tiny", ["model.kind=lstm", "model.lstm_hidden=7",
                                            "model.lstm_chrono_range=1,40"])
    assert run.model == LSTMConfig(num_input=run.model.num_input,
                                   num_output=run.model.num_output, hidden=7,
                                   chrono_range=(1.0, 40.0))
    with pytest.raises(ValueError, match="model.num_memory applies to the ELM"):
        resolve_run("adding", "tiny", ["model.kind=lstm", "model.num_memory=3"])
    with pytest.raises(ValueError, match="model.lstm_hidden applies to model.kind=lstm"):
        resolve_run("adding", "tiny", ["model.lstm_hidden=3"])
    with pytest.raises(ValueError, match="model.kind='gru' is invalid"):
        resolve_run("adding", "tiny", ["model.kind=gru"])


def _lstm_reference_run(workdir):
    t, run = resolve_run("adding", "tiny", SHORT)
    ref = Trainer(t, run, workdir, progress=False).fit()
    assert ref["status"] == "completed" and ref["num_params"] == count_model_params(run.model)
    losses = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
    train = [r["loss"] for r in losses if r.get("kind") == "train"]
    assert np.mean(train[-5:]) < np.mean(train[:5])  # it learns
    config, _ = load_model(workdir / "final_model")
    assert config == run.model
    return t, run, ref


def test_lstm_trains_in_the_trainer(tmp_path):
    # CI version of the resume test below (the trainer's exact resume is model-agnostic
    # and tested with the ELM in test_train_trainer.py)
    _lstm_reference_run(tmp_path / "ref")


@pytest.mark.slow
def test_lstm_trains_in_the_trainer_and_resumes_exactly(tmp_path):
    t, run, ref = _lstm_reference_run(tmp_path / "ref")
    cut = Trainer(t, run, tmp_path / "cut", progress=False, stop_after_steps=9).fit()
    assert cut["status"] == "interrupted"
    resumed = Trainer(t, run, tmp_path / "cut", progress=False, resume=True).fit()
    assert resumed["test"] == ref["test"]
    config, a = load_model(tmp_path / "ref" / "final_model")
    _, b = load_model(tmp_path / "cut" / "final_model")
    assert config == run.model
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert jnp.isfinite(jnp.asarray(resumed["test"]["loss"]))


def test_shd_tiny_lstm_trains_and_the_eval_cli_reads_its_model(tmp_path, capsys):
    from elm_jax.cli import main

    task, run = resolve_run("shd", "tiny", ["model.kind=lstm"])
    assert run.model.hidden == 16 and run.model.chrono_range is None
    report = Trainer(task, run, tmp_path / "run", progress=False).fit()
    assert report["final_evaluation"]["num_examples"] == 16
    assert report["final_evaluation"]["delta_t"] is None  # an LSTM has no time step
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "best_model"),
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == report["final_evaluation"]["accuracy"]
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "best_model"),
                 "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y")]) == 2
    assert "holds an LSTM h=16" in capsys.readouterr().err


def test_lstm_run_options_are_not_resolved_as_an_elm_backend(monkeypatch):
    # on GPU/TPU backend="auto" depends on ELMConfig.memory_feedback, which an LSTM lacks
    from elm_jax.train.trainer import check_model_options

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    _, run = resolve_run("adding", "tiny", ["model.kind=lstm"])
    check_model_options(run)
    _, elm_run = resolve_run("adding", "tiny", ["model.backend=auto"])
    check_model_options(elm_run)

"""The published NeuronIO evaluation: metrics by hand, windowing, and the reference numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import elm_jax
from helpers import require_shared
from elm_jax.cli import main as cli_main
from elm_jax.tasks import neuronio as nio
from elm_jax.tasks.neuronio import teacher
from elm_jax.tasks.neuronio import evaluation as ev

# ../shared/data/neuronio_l5pc/README.md, "Reference evaluation numbers" (reference PyTorch
# implementation and evaluation code, all three files together)
REFERENCE_TABLE = {
    "best_elm_neuron": {"AUC": 0.9933589, "TP @ 0.0025 FP": 0.3506494,
                        "TP @ 0.0100 FP": 0.7922078, "soma_RMSE": 0.5888223,
                        "soma_MAE": 0.3235604, "soma_explained_variance_percent": 96.50421},
    "num_memory_15": {"AUC": 0.9892521, "TP @ 0.0025 FP": 0.2467532,
                      "TP @ 0.0100 FP": 0.6753247, "soma_RMSE": 0.7117555,
                      "soma_MAE": 0.4026501, "soma_explained_variance_percent": 94.90165},
}


# ---------------------------------------------------------------------------- metrics
def test_roc_by_hand_with_ties():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.2, 0.6, 0.6, 0.9, 0.2])
    # pairs (pos, neg): .6>.2, .6=.6 (1/2), .9>.2, .9>.6, .2=.2 (1/2), .2<.6 -> 4/6
    assert ev.roc_auc(y, s) == pytest.approx(4 / 6, abs=1e-15)
    fpr, tpr, thr = ev.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.6, 0.2])
    fpr, tpr, thr = ev.roc_curve(y, s)          # (0.5, 2/3) is collinear -> dropped
    np.testing.assert_allclose(fpr, [0, 0, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1])
    # nearest FPR to 0.4 is index 0, forced to 1
    assert ev.tp_at_fp(fpr, tpr, 0.4) == pytest.approx(1 / 3)
    assert ev.tp_at_fp(np.array([0, 0.01, 0.3, 1]), np.array([0, 0.4, 0.9, 1]), 0.2) == 0.9


def test_roc_all_tied_and_classic_case():
    assert ev.roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    fpr, tpr, _ = ev.roc_curve([0, 1, 0, 1], [0.5] * 4)
    np.testing.assert_array_equal(fpr, [0, 1])
    np.testing.assert_array_equal(tpr, [0, 1])
    assert ev.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert ev.roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.1]) == 1.0
    assert np.isnan(ev.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))


def test_auc_at_fp_by_hand():
    # diagonal ROC: TPR = FPR on the 20,000-point grid; the index nearest 0.01 is 200
    grid = np.linspace(0, 1, 20000)
    assert ev.auc_at_fp(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0.01) == \
        pytest.approx(grid[:200].mean())
    # a perfect classifier: TPR = 1 everywhere after FPR 0
    assert ev.auc_at_fp(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]), 0.0025) == \
        pytest.approx(1.0)


def test_soma_metrics_by_hand():
    m = ev.neuronio_metrics([0, 1, 0], [0.1, 0.9, 0.2], [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["soma_RMSE"] == pytest.approx(np.sqrt(1 / 3))
    assert m["soma_MAE"] == pytest.approx(1 / 3)
    # Var(diff) = 2/9, Var(y) = 2/3 -> EV = 1 - 1/3
    assert m["soma_explained_variance_percent"] == pytest.approx(100 * 2 / 3)
    assert m["AUC"] == 1.0
    assert set(m) == {"TP @ 0.0025 FP", "AUC @ 0.0025 FP", "TP @ 0.0100 FP",
                      "AUC @ 0.0100 FP", "AUC", "soma_explained_variance_percent",
                      "soma_RMSE", "soma_MAE"}
    assert ev.explained_variance([2, 2, 2], [2, 2, 2]) == 1.0
    assert ev.explained_variance([2, 2, 2], [2, 3, 2]) == 0.0


# ---------------------------------------------------------------------------- windowing
def test_windows_tile_each_simulation_after_burn_in():
    assert ev.num_eval_windows(6000, 500, 150) == 17
    k, j = ev._window_source(6000, 500, 150)
    t = np.arange(6000)
    np.testing.assert_array_equal(k * 350 + j, t)
    assert (j[t >= 500] >= 150).all() and (j < 500).all() and (k[t < 500] == 0).all()
    assert k.max() == 16


def _moving_sum_model(x, width=100):
    """Causal sum of channel 0 over the last `width` steps (memory < burn-in)."""
    c = np.cumsum(x[..., 0].astype(np.float64), axis=1)
    c[:, width:] -= c[:, :-width].copy()
    return c.astype(np.float32) / 10.0, c.astype(np.float32) / 100.0


def test_windowed_prediction_equals_whole_sequence_for_short_memory():
    rng = np.random.default_rng(0)
    T = 2222
    x = (rng.random((3, T, 4)) < 0.3).astype(np.int8) * np.array([1, 1, -1, -1], np.int8)
    y = np.zeros((3, T), np.float32)
    y[:, [700, 1500]] = 1
    soma = rng.normal(-65, 3, (3, T)).astype(np.float32)
    data = ev._data_from_arrays(x, y, soma)
    np.testing.assert_array_equal(data.x_dense(), x)
    prob, soma_pred = ev.predict_simulations(_moving_sum_model, data, batch_size=5)
    logit, soma_scaled = _moving_sum_model(x)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit.astype(np.float64))), rtol=1e-6)
    np.testing.assert_allclose(soma_pred, soma_scaled * 10.0, rtol=1e-6)


def test_filtering_and_realignment():
    rng = np.random.default_rng(1)
    T = 1500
    x = (rng.random((3, T, 4)) < 0.2).astype(np.int8)
    y = np.zeros((3, T), np.float32)
    y[0, 600:630] = 1        # 30 spikes: excluded by the 0-24 rule
    y[1, [700, 900]] = 1
    soma = rng.normal(-66, 3, (3, T)).astype(np.float32)
    m, files = ev.evaluate_neuronio(
        lambda xb: (np.zeros(xb.shape[:2]), 5.0 + xb[..., 0].astype(np.float32)),
        dict(x=x, y_spike=y, soma_mv=soma), return_predictions=True)
    assert m["num_simulations"] == 3 and m["num_simulations_evaluated"] == 2
    f = files[0]
    truth = np.minimum(soma.astype(np.float64), -55.0) + 67.7
    np.testing.assert_allclose(f.soma_true, truth)
    # the prediction is z-scored and mapped onto the ground truth's mean and std
    assert f.soma_pred.mean() == pytest.approx(truth.mean())
    assert f.soma_pred.std() == pytest.approx(truth.std())
    assert m["AUC"] == 0.5          # constant spike prediction


# ---------------------------------------------------------------------------- reference
@pytest.fixture(scope="module")
def real_data():
    return [nio.load_file(f) for f in nio.find_files(require_shared("data", "neuronio_l5pc"))]


def test_reference_table_num_memory_15(real_data):
    ref = require_shared("reference", "num_memory_15")
    config, params = elm_jax.load_torch_checkpoint(ref / "neuronio_best_model_state.pt",
                                                   ref / "model_config.json")
    metrics = ev.evaluate_neuronio(ev.ModelPredictor(config, params), real_data)
    for key, value in REFERENCE_TABLE["num_memory_15"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key
    assert metrics["num_simulations"] == 18 and metrics["num_simulations_evaluated"] == 15


def test_reference_table_best_elm_neuron_via_cli(tmp_path, capsys):
    ref = require_shared("reference", "best_elm_neuron")
    data_dir = require_shared("data", "neuronio_l5pc")
    model = tmp_path / "best"
    assert cli_main(["convert", "--torch-checkpoint", str(ref / "neuronio_best_model_state.pt"),
                     "--config", str(ref / "model_config.json"), "--out", str(model)]) == 0
    report, plots = tmp_path / "report.json", tmp_path / "plots"
    assert cli_main(["neuronio-eval", "--checkpoint", str(model), "--data-dir", str(data_dir),
                     "--out", str(report), "--plots", str(plots)]) == 0
    metrics = json.loads(report.read_text())
    for key, value in REFERENCE_TABLE["best_elm_neuron"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key
    assert metrics["AUC"] >= 0.99
    assert '"AUC": 0.99335' in capsys.readouterr().out
    assert len(metrics["evaluation"]["files"]) == 3
    for name in ("neuronio_eval_simulation.png", "neuronio_eval_roc.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_runs_on_teacher_data(tmp_path):
    path = teacher.generate_file(tmp_path / "Data_test", num_sims=2, duration_ms=1800, seed=4)
    config = elm_jax.ELMConfig.preset("neuronio_branch_dm2")
    params = elm_jax.init_params(__import__("jax").random.key(0), config)
    metrics = ev.evaluate_neuronio(ev.ModelPredictor(config, params), path, batch_size=4,
                                   plot_dir=tmp_path / "plots")
    assert metrics["num_simulations"] == 2 and np.isfinite(metrics["soma_RMSE"])
    assert (tmp_path / "plots" / "neuronio_eval_simulation.png").exists()
    out = ev.write_report(tmp_path / "r.json", {"AUC": float("nan"), "soma_RMSE": 1.0})
    assert json.loads(out.read_text()) == {"AUC": None, "soma_RMSE": 1.0}


def test_events_and_dense_windows_give_the_same_report(tmp_path):
    """`ModelPredictor` is fed events ("auto" picks them for NeuronIO models at real
    NeuronIO rates) or dense windows; the predictions agree to float32 rounding and the
    metrics match."""
    path = teacher.generate_file(tmp_path / "Data_test", num_sims=2, duration_ms=1300, seed=5)
    config = elm_jax.ELMConfig.preset("neuronio_branch_dm2")
    params = elm_jax.init_params(__import__("jax").random.key(1), config)
    dense_fn = ev.ModelPredictor(config, params, input_format="dense")
    events_fn = ev.ModelPredictor(config, params, input_format="events")
    auto_fn = ev.ModelPredictor(config, params)  # these teacher inputs are ~8x denser
    assert auto_fn.prefers_events(3.0) and not auto_fn.prefers_events(40.0)  # than real
    assert events_fn.prefers_events(40.0) and not dense_fn.prefers_events(3.0)
    calls = []
    seen = lambda fn: lambda x: calls.append(type(x).__name__) or fn(x)  # noqa: E731
    seen_events = seen(events_fn)
    seen_events.prefers_events = events_fn.prefers_events
    m_dense, f_dense = ev.evaluate_neuronio(seen(dense_fn), path, batch_size=3,
                                            return_predictions=True)
    m_events, f_events = ev.evaluate_neuronio(seen_events, path, batch_size=3,
                                              return_predictions=True)
    assert set(calls) == {"ndarray", "SpikeEvents"}
    np.testing.assert_allclose(f_events[0].spike_prob, f_dense[0].spike_prob, rtol=1e-5,
                               atol=1e-6)
    for key in ("AUC", "soma_RMSE", "soma_explained_variance_percent"):
        assert m_events[key] == pytest.approx(m_dense[key], rel=1e-5, nan_ok=True), key
    with pytest.raises(ValueError, match="input_format='sparse' is invalid"):
        ev.ModelPredictor(config, params, input_format="sparse")

"""Task evaluations.  `neuronio`: the published NeuronIO evaluation and its metrics."""

from .neuronio import (DEFAULT_FP_RATES, FilePredictions, ModelPredictor, auc, auc_at_fp,
                       evaluate_neuronio, explained_variance, neuronio_metrics,
                       predict_simulations, roc_auc, roc_curve, tp_at_fp, write_report)

__all__ = [
    "DEFAULT_FP_RATES", "FilePredictions", "ModelPredictor", "auc", "auc_at_fp",
    "evaluate_neuronio", "explained_variance", "neuronio_metrics", "predict_simulations",
    "roc_auc", "roc_curve", "tp_at_fp", "write_report",
]

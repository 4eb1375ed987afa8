"""Evaluation: metrics (pure functions), whole-split model passes, and a run folder -> metrics.json."""

from aelab.evaluation.evaluate import (
    COLUMNS,
    METRICS_FORMAT,
    SSIM_DEFINITION,
    TestPasses,
    evaluate_model,
    evaluate_run,
    evaluate_run_passes,
    evaluate_test,
    format_table,
)
from aelab.evaluation.passes import encode_all, encode_reconstruct_all, fit_pca, reconstruct_all

__all__ = ["COLUMNS", "METRICS_FORMAT", "SSIM_DEFINITION", "TestPasses", "encode_all", "encode_reconstruct_all",
           "evaluate_model", "evaluate_run", "evaluate_run_passes", "evaluate_test", "fit_pca", "format_table",
           "reconstruct_all"]

"""Evaluation: pose metrics (MPJPE, PA-MPJPE, PCK, AUC) and the benchmark protocols."""

from hmr_fast.eval.metrics import AUC_THRESHOLDS, auc, mpjpe, pa_mpjpe, pck, procrustes_align

__all__ = ["AUC_THRESHOLDS", "auc", "mpjpe", "pa_mpjpe", "pck", "procrustes_align"]

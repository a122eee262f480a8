"""Training and evaluation glue on MONAI's Ignite engines."""

from __future__ import annotations

from monai_mammo.engines.evaluation import (
    FLIPS,
    classification_report,
    ensemble_report,
    flip_tta_scores,
    predict_scores,
    save_confusion_matrix,
    save_predictions_csv,
    save_roc_plot,
)
from monai_mammo.engines.handlers import (
    EarlyStopOnMetric,
    ProgressLogger,
    TrainingCheckpoint,
    atomic_save,
    resume_training,
    run_trainer,
)
from monai_mammo.engines.patches import (
    PatchDataset,
    extract_patch_dataset,
)
from monai_mammo.engines.staged import (
    Stage,
    StagedFineTuning,
    one_cycle_lr,
    select_trainable,
    total_epochs,
)
from monai_mammo.engines.tracking import (
    MLflowEpochLogger,
    MLflowTracker,
    current_bundle_config,
    default_home,
    default_tracking_uri,
    flatten_params,
    git_commit,
    replay_journal,
    unique_run_name,
)
from monai_mammo.engines.two_step_baseline import (
    DEFAULT_THRESHOLDS,
    REGION_PROPERTIES,
    TwoStepBaseline,
    heatmap_feature_names,
    heatmap_features,
)
from monai_mammo.engines.workflow import (
    balanced_class_weights,
    ensure_dataset,
    evaluate_and_log,
    find_images,
    load_checkpoint,
    predict_to_csv,
    rank_zero_first,
    running_bundle_root,
    synthetic_dataset_dir,
)

__all__ = [
    "Stage",
    "StagedFineTuning",
    "one_cycle_lr",
    "select_trainable",
    "total_epochs",
    "TrainingCheckpoint",
    "EarlyStopOnMetric",
    "ProgressLogger",
    "atomic_save",
    "resume_training",
    "run_trainer",
    "FLIPS",
    "flip_tta_scores",
    "predict_scores",
    "classification_report",
    "ensemble_report",
    "save_roc_plot",
    "save_confusion_matrix",
    "save_predictions_csv",
    "default_home",
    "default_tracking_uri",
    "unique_run_name",
    "git_commit",
    "flatten_params",
    "current_bundle_config",
    "MLflowEpochLogger",
    "MLflowTracker",
    "replay_journal",
    "extract_patch_dataset",
    "PatchDataset",
    "running_bundle_root",
    "synthetic_dataset_dir",
    "ensure_dataset",
    "balanced_class_weights",
    "load_checkpoint",
    "evaluate_and_log",
    "find_images",
    "predict_to_csv",
    "rank_zero_first",
    "DEFAULT_THRESHOLDS",
    "REGION_PROPERTIES",
    "TwoStepBaseline",
    "heatmap_feature_names",
    "heatmap_features",
]

"""The stages of the series: one record each (registry), what keys their runs (keys), the checks
made before one trains (checks), what an adaptation stage trains on (inputs), checkpoints, and
the dispatcher that loads or trains a stage (run). The names most callers need are here."""

from wsda_lib.stages.checkpoints import build_model, load_weights, model_weights
from wsda_lib.stages.checks import check_before_training, check_chain_uses
from wsda_lib.stages.inputs import adaptation_data, pseudo_label_model, pseudo_weak_quality
from wsda_lib.stages.keys import pseudo_label_key, run_config
from wsda_lib.stages.registry import (
    CHOSEN_SELF_TRAINING,
    EVAL_SPLITS,
    STAGES,
    Comparison,
    Control,
    Stage,
    Switches,
    chain,
    fixed_fields,
    stage,
    stage_config,
    title,
)
from wsda_lib.stages.run import (
    TARGET_STATISTICS,
    StageResult,
    evaluate_splits,
    run_stage,
    target_statistics_scores,
)

__all__ = ["CHOSEN_SELF_TRAINING", "EVAL_SPLITS", "STAGES", "TARGET_STATISTICS", "Comparison",
           "Control", "Stage", "StageResult", "Switches", "adaptation_data", "build_model",
           "chain", "check_before_training", "check_chain_uses", "evaluate_splits",
           "fixed_fields", "load_weights", "model_weights", "pseudo_label_key",
           "pseudo_label_model", "pseudo_weak_quality", "run_config", "run_stage", "stage",
           "stage_config", "target_statistics_scores", "title"]

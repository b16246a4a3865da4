"""Kubeflow Pipelines components: one per stage, each a thin adapter that calls one `mrl` function.

Every component runs in the project's image (Dockerfile at the repository root, `mrl` installed), so
the bodies import `mrl` and nothing is pip-installed at run time. Locally, kfp.local's
SubprocessRunner(use_venv=False) runs the same bodies in the installed environment.
Params travel as the text of params.yaml ("" = the embedded defaults) and are validated in each step.
"""

from components.drift import dataset_drift_op, drift_op
from components.evaluate import evaluate_op
from components.ingest import ingest_op
from components.promote import finish_promotion_op, insert_shard_op, plan_promotion_op, shard_list_op
from components.register import register_op
from components.retrain import retrain_op
from components.train import train_op
from components.validate import validate_op
from components.video import (
    ingest_videos_op,
    promote_segments_op,
    segment_videos_op,
    validate_frames_op,
    validate_segments_op,
)

__all__ = ["dataset_drift_op", "drift_op", "evaluate_op", "finish_promotion_op", "ingest_op", "ingest_videos_op",
           "insert_shard_op", "plan_promotion_op", "promote_segments_op", "register_op", "retrain_op",
           "segment_videos_op", "shard_list_op", "train_op", "validate_frames_op", "validate_op", "validate_segments_op"]

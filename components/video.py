"""Video archive components: ingest videos -> validate frames -> segment with the champion -> validate segments ->
promote the segments index (alias video.collection_prefix). Each calls one `mrl` function."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def ingest_videos_op(params_yaml: str, input_path: str, frames: Output[Dataset]):
    """A folder of videos -> the frames artifact. Empty `input_path`: ingest.input."""
    from mrl.config import parse_params
    from mrl.video.frames import ingest_videos

    cfg = parse_params(params_yaml, "params_yaml")
    r = ingest_videos(input_path or cfg.ingest.input, frames.path, cfg.video, cfg.ingest)
    frames.metadata.update({"videos": r.videos, "frames": r.frames, "hours": r.hours, "fps": cfg.video.fps,
                            "skipped": r.skipped})


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def validate_frames_op(params_yaml: str, frames: Input[Dataset], result: Output[Artifact]):
    """Great Expectations gate on the frames: fails the run (before any embedding) if an expectation fails."""
    from mrl.config import parse_params
    from mrl.validate import validate_frames

    report = validate_frames(frames.path, parse_params(params_yaml, "params_yaml"), result.path)
    result.metadata.update({"success": report.success, "expectations": report.evaluated})


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def segment_videos_op(params_yaml: str, tracking_uri: str, frames: Input[Dataset], segments: Output[Dataset]):
    """Embed the frames with the champion and cut scenes. Empty `tracking_uri`: $MLFLOW_TRACKING_URI of the pod."""
    from mrl.config import parse_params
    from mrl.video.scenes import segment_videos

    cfg = parse_params(params_yaml, "params_yaml")
    r = segment_videos(cfg, frames.path, segments.path, tracking_uri or None)
    segments.metadata.update({"videos": r.videos, "frames": r.frames, "segments": r.segments,
                              "scene_dim": r.scene_dim, "model_version": r.model_version})


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def validate_segments_op(segments: Input[Dataset], result: Output[Artifact]):
    """Great Expectations gate on the segments: fails the run (before indexing) if an expectation fails."""
    from mrl.validate import validate_segments

    report = validate_segments(segments.path, result.path)
    result.metadata.update({"success": report.success, "expectations": report.evaluated})


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def promote_segments_op(params_yaml: str, milvus_uri: str, segments: Input[Dataset], promotion: Output[Artifact]
                        ) -> str:
    """Index the segments in a new collection, verify, swap the video alias. Empty `milvus_uri`: $MILVUS_URI of the
    pod. Returns the collection."""
    import json
    from dataclasses import asdict

    from mrl.config import parse_params
    from mrl.video.index import promote_segments

    r = promote_segments(parse_params(params_yaml, "params_yaml"), segments.path, milvus_uri or None)
    with open(promotion.path, "w") as f:
        json.dump(asdict(r), f, indent=2)
    promotion.metadata.update({"collection": r.collection, "segments": r.segments, "funnel": r.funnel,
                               "verify_recall": r.verify_recall})
    return r.collection

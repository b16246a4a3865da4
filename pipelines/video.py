"""Video pipeline (ingest.source: video): ingest a folder of videos -> validate the frames -> embed them with the
champion and cut scenes -> validate the segments -> promote the segments index behind video.collection_prefix.
It trains nothing: the champion comes from the training pipeline."""

from pathlib import Path

from kfp import compiler, dsl

from components.video import (
    ingest_videos_op,
    promote_segments_op,
    segment_videos_op,
    validate_frames_op,
    validate_segments_op,
)
from mrl.config import ClusterConfig
from pipelines.cluster import DEFAULT_CLUSTER, on_cluster

COMPILED = Path(__file__).with_suffix(".yaml")


def build(cluster: ClusterConfig = DEFAULT_CLUSTER):
    """The pipeline, with `cluster`'s Kubernetes wiring compiled in."""

    @dsl.pipeline(name="mrl-video",
                  description="Sample frames from a folder of videos, cut them into scenes with the champion model "
                              "and promote the segments' Milvus index.")
    def video_pipeline(params_yaml: str = "", input_path: str = "", tracking_uri: str = "", milvus_uri: str = "") -> str:
        # No caching where the same arguments can mean new work: new footage in the same folder, a new champion,
        # and every promotion makes a new collection and moves the alias.
        ingest = on_cluster(ingest_videos_op(params_yaml=params_yaml, input_path=input_path), cluster)
        ingest.set_caching_options(False)
        frames = ingest.outputs["frames"]
        validate_frames = on_cluster(validate_frames_op(params_yaml=params_yaml, frames=frames), cluster)
        segment = on_cluster(segment_videos_op(params_yaml=params_yaml, tracking_uri=tracking_uri, frames=frames)
                             .after(validate_frames), cluster)
        segment.set_caching_options(False)
        segments = segment.outputs["segments"]
        validate_segments = on_cluster(validate_segments_op(segments=segments), cluster)
        promote = on_cluster(promote_segments_op(params_yaml=params_yaml, milvus_uri=milvus_uri, segments=segments)
                             .after(validate_segments), cluster)
        promote.set_caching_options(False)
        return promote.outputs["Output"]

    return video_pipeline


video_pipeline = build()


def compile_pipeline(path: Path = COMPILED, cluster: ClusterConfig = DEFAULT_CLUSTER) -> Path:
    compiler.Compiler().compile(build(cluster), str(path))
    return path


if __name__ == "__main__":
    print(f"wrote {compile_pipeline()}")

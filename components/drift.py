from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def drift_op(params_yaml: str, current_path: str, tracking_uri: str, milvus_uri: str, report: Output[HTML],
             summary: Output[Artifact], split: str = "", reference_path: str = "") -> bool:
    """Compare a window (a query-log directory, .npy, dataset or Parquet path the pod can read) with the served
    collection's drift reference. Returns whether drift was found; bad input fails the step."""
    from mrl.drift import monitor_into

    drifted, metadata = monitor_into(params_yaml, current_path, report.path, summary.path, split, reference_path,
                                     tracking_uri, milvus_uri)
    summary.metadata.update(metadata)
    return drifted


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def dataset_drift_op(params_yaml: str, tracking_uri: str, milvus_uri: str, dataset: Input[Dataset], split: str,
                     report: Output[HTML], summary: Output[Artifact]) -> bool:
    """drift_op on a dataset artifact of the same pipeline: the training pipeline's held-out window check."""
    from mrl.drift import monitor_into

    drifted, metadata = monitor_into(params_yaml, dataset.path, report.path, summary.path, split,
                                     tracking_uri=tracking_uri, milvus_uri=milvus_uri)
    summary.metadata.update(metadata)
    return drifted

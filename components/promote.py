"""Index promotion as three kinds of step, so a large catalogue is embedded in parallel:
plan (choose the funnel, create the collection) -> one insert step per shard (KFP ParallelFor) ->
verify and swap the alias. A shard's failure leaves the alias where it was."""


from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def plan_promotion_op(params_yaml: str, tracking_uri: str, milvus_uri: str, version: str, dataset: Input[Dataset],
                      evaluated: Input[Artifact], embeddings: Output[Artifact]) -> str:
    """Check the champion and data, choose the funnel, save the drift reference, create the empty collection.
    Returns the plan (JSON). Empty URIs: the pod's $MLFLOW_TRACKING_URI / $MILVUS_URI. `embeddings`: the whole
    catalogue's embeddings (.npy) when the funnel was chosen on all of it, so the insert steps do not embed it again;
    else no rows (a catalogue above retrieval.choose_sample: each shard embeds its own rows). `evaluated`: the evaluate
    step's embeddings of the whole catalogue, made by the checkpoint that `version` registered: not embedded again."""
    from mrl.config import parse_params
    from mrl.promote import load_catalogue, plan_promotion, save_catalogue

    cfg = parse_params(params_yaml, "params_yaml")
    keep: dict = {}
    plan = plan_promotion(cfg, dataset.path, tracking_uri or None, milvus_uri or None, version, keep=keep,
                          catalogue=load_catalogue(evaluated.path))
    embeddings.metadata["rows"] = save_catalogue(embeddings.path, keep.get("all"))
    return plan.to_json()



@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def shard_list_op(params_yaml: str, plan: str) -> list:
    """One work item per shard of retrieval.shards: what the insert steps fan out over. Each item carries the
    plan, because kfp.local (2.17) resolves other tasks' outputs inside a ParallelFor wrongly."""
    import json

    from mrl.config import parse_params

    shards = parse_params(params_yaml, "params_yaml").retrieval.shards
    return [json.dumps({"plan": plan, "shard": i, "shards": shards}) for i in range(shards)]


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def insert_shard_op(params_yaml: str, tracking_uri: str, milvus_uri: str, work: str, dataset: Input[Dataset],
                    embeddings: Input[Artifact], top_k: Output[Artifact]):
    """Embed one shard (a shard_list_op item) and insert it; writes its exact top-k for the verify queries (a file:
    too large for a parameter, which kfp.local passes on a command line)."""
    import json

    from mrl.config import parse_params
    from mrl.promote import Plan, abandon_promotion, insert_shard, load_catalogue

    cfg, item = parse_params(params_yaml, "params_yaml"), json.loads(work)
    the_plan = Plan.from_json(item["plan"])
    try:
        partial = insert_shard(cfg, the_plan, dataset.path, tracking_uri or None, milvus_uri or None, item["shard"],
                               item["shards"], load_catalogue(embeddings.path))
    except BaseException:  # the finish step will not run: drop the collection and release the promotion lock
        abandon_promotion(cfg, the_plan, milvus_uri or None)
        raise
    with open(top_k.path, "w") as f:
        json.dump(partial, f)


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def finish_promotion_op(params_yaml: str, tracking_uri: str, milvus_uri: str, plan: str,
                        partials: Input[list[Artifact]], dataset: Input[Dataset], embeddings: Input[Artifact],
                        promotion: Output[Artifact]) -> str:
    """Verify row count and funnel recall through Milvus, then swap the serving alias. Returns the collection."""
    import json

    from mrl.config import parse_params
    from mrl.promote import Plan, abandon_promotion, finish_promotion, load_catalogue

    cfg = parse_params(params_yaml, "params_yaml")
    the_plan = Plan.from_json(plan)
    try:
        tops = []
        for part in partials:
            with open(part.path) as f:
                tops.append(json.load(f))
        r = finish_promotion(cfg, the_plan, dataset.path, tracking_uri or None, milvus_uri or None, tops,
                             load_catalogue(embeddings.path))
    except BaseException:
        abandon_promotion(cfg, the_plan, milvus_uri or None)
        raise
    with open(promotion.path, "w") as f:
        json.dump(r.to_dict(), f, indent=2)
    promotion.metadata.update({"collection": r.collection, "funnel": r.funnel.funnel.name(),
                               "funnel_recall": r.funnel.recall, "verify_recall": r.verify_recall})
    return r.collection

"""A pretrained backbone with an MRL head, end to end on small colour photos: ingest an image folder in RGB, validate
against the model's input, train the head on cached features (supervised and the instance objective), evaluate,
register in MLflow (with the ONNX graph and the preprocessing), and embed with the registered model as serving does."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mrl.checkpoint import load_model
from mrl.config import load_config
from mrl.errors import MRLError
from mrl.evaluate import evaluate
from mrl.ingest import ingest
from mrl.train import train
from mrl.validate import validate_dataset, validate_frames

pytestmark = pytest.mark.slow  # the backbone runs on every photo and view

SIZE = 64
PARAMS = ["ingest.source=image_folder", f"ingest.image_size={SIZE}", "ingest.grayscale=false",
          "model.backbone=efficientnet_lite0", f"model.image_size={SIZE}", "model.embedding_dim=32",
          "model.nesting_dims=[8, 16, 32]", "model.mlp_hidden_dim=64", "train.epochs=3", "train.batch_size=16",
          "train.views=2", "validation.min_train_items=10", "validation.min_test_items=4",
          "validation.max_class_share=0.8"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two classes of colour photos (warm and cool blobs on noise), 16 each, 80x60 px JPEGs."""
    root = tmp_path_factory.mktemp("photos") / "in"
    rng = np.random.default_rng(0)
    for label, colour in enumerate(((220, 90, 40), (40, 90, 220))):
        folder = root / f"c{label}"
        folder.mkdir(parents=True)
        for i in range(16):
            img = rng.normal(120, 30, (60, 80, 3))
            y, x = rng.integers(10, 40), rng.integers(10, 60)
            img[y:y + 20, x:x + 20] = colour
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bb")
    cfg = load_config(None, [*PARAMS, f"train.feature_cache={tmp / 'cache'}"])
    data = ingest("image_folder", photos, tmp / "ds.npz", cfg.ingest).path
    model = train(cfg, data, tmp / "model.pt", log=lambda _: None).path
    metrics = evaluate(model, data, cfg.evaluate, tmp / "metrics.json")
    return {"cfg": cfg, "data": data, "model": model, "metrics": metrics, "tmp": tmp}


def test_head_learns_and_checkpoint_carries_preprocessing(trained):
    per_dim = trained["metrics"].per_dim
    assert per_dim[32]["knn_top1"] >= 0.75  # two easy classes: a frozen backbone + head separates them
    m = load_model(trained["model"])
    assert m.meta["preprocess"] == {"backbone": "efficientnet_lite0", "channels": 3, "size": SIZE,
                                    "resize": "shorter side to size, centre crop",
                                    "normalize": {"mean": 127.0, "std": 128.0}}
    assert m.meta["item_shape"] == [3, SIZE, SIZE]


@pytest.mark.parametrize("objective", ["contrastive", "similarity"])
def test_label_free_objectives_train_on_the_cached_features(trained, objective):
    cfg = load_config(None, [*PARAMS, f"loss.objective={objective}", f"train.feature_cache={trained['tmp'] / 'cache'}"])
    said = []
    result = train(cfg, trained["data"], trained["tmp"] / f"{objective}.pt", log=said.append)
    assert any("from the cache" in line for line in said)  # same photos, weights and views: features reused
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert np.isfinite(last) and last < first


def test_similarity_objective_needs_a_frozen_base(trained):
    cfg = load_config(None, [*PARAMS, "loss.objective=similarity", "train.freeze=none"])
    with pytest.raises(MRLError, match="loss.objective: similarity keeps a frozen base"):
        train(cfg, trained["data"], trained["tmp"] / "no.pt", log=lambda _: None)
    assert not (trained["tmp"] / "no.pt").exists()


def test_registered_model_embeds_through_onnx_like_torch(trained):
    from mlflow import MlflowClient

    from mrl.champion import embed_with
    from mrl.registry import register_model
    from mrl.tracking import ONNX_TAG, PREPROCESS_TAG, log_training_run

    uri = f"sqlite:///{trained['tmp'] / 'mlflow.db'}"
    run_id = log_training_run(trained["model"], trained["metrics"].json_path, None, uri)
    register_model(run_id, trained["cfg"].registry.model_name, uri)
    tags = MlflowClient(uri).get_run(run_id).data.tags
    assert tags[ONNX_TAG] == "onnx/encoder.onnx" and json.loads(tags[PREPROCESS_TAG])["size"] == SIZE
    x = np.load(trained["data"])["x"][:6]
    fast = embed_with(f"models:/{trained['cfg'].registry.model_name}/1", x, 4, tracking_uri=uri)
    with torch.no_grad():
        ref = load_model(trained["model"]).encoder(torch.from_numpy(x)).numpy()
    cos = (fast * ref).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999


def test_validation_checks_channels_and_size_against_the_model(trained, photos):
    cfg = trained["cfg"]
    assert validate_dataset(trained["data"], cfg.validation, None, cfg.model).success
    small = ingest("image_folder", photos, trained["tmp"] / "small.npz",
                   cfg.ingest.model_copy(update={"image_size": 32})).path
    with pytest.raises(MRLError) as err:
        validate_dataset(small, cfg.validation, None, cfg.model)
    assert "items.expect_column_values_to_be_in_set(height)" in str(err.value) and "\n" not in str(err.value)


def test_frames_at_the_wrong_size_fail_validation(tmp_path):
    from mrl.video.frames import Frames, save_frames

    frames = Frames(np.array(["v.mp4"] * 3), np.array([0.0, 0.5, 1.0]), np.zeros((3, 1, 28, 28), np.uint8),
                    np.array(["v.mp4"]), np.array([1.4]), 2.0)
    path = save_frames(frames, tmp_path / "frames.npz")
    cfg = load_config(None, PARAMS)
    with pytest.raises(MRLError, match=r"frames.expect_column_values_to_be_in_set\(channels\)"):
        validate_frames(path, cfg)

from pathlib import Path

import pytest
import yaml

from mrl.config import Config, load_config
from mrl.errors import MRLError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_params_yaml_equals_embedded_defaults():
    # The README promises the main job runs on the embedded defaults; params.yaml documents them.
    assert load_config(REPO / "params.yaml") == Config()


def test_defaults_nest_up_to_embedding_dim():
    cfg = Config()
    assert cfg.model.nesting_dims[-1] == cfg.model.embedding_dim


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train:\n  epoch: 3\n", "params.yaml: train.epoch: unknown key"),
        ("trian:\n  epochs: 3\n", "params.yaml: trian: unknown key"),
        ("train:\n  epochs: three\n", "params.yaml: train.epochs: Input should be a valid integer"),
        ("train:\n  epochs: '3'\n", "params.yaml: train.epochs: Input should be a valid integer"),
        ("train:\n  lr: -1.0\n", "params.yaml: train.lr: Input should be greater than 0"),
        ("model:\n  nesting_dims: [8, 8, 16]\n", "params.yaml: model.nesting_dims: must be strictly increasing"),
        ("model:\n  nesting_dims: [16, 8]\n", "params.yaml: model.nesting_dims: must be strictly increasing"),
        ("model:\n  nesting_dims: [8, 1024]\n",
         "params.yaml: model.nesting_dims: largest dim 1024 exceeds embedding_dim 512"),
        ("model:\n  nesting_dims: []\n", "params.yaml: model.nesting_dims: must not be empty"),
        ("loss:\n  objective: triplet\n",
         "params.yaml: loss.objective: Input should be 'mrl', 'mrl_e', 'contrastive' or 'similarity'"),
        ("loss:\n  dim_weights: [1.0, 2.0]\n", "params.yaml: loss.dim_weights: 2 weights for 7 nesting_dims"),
        ("- a\n- b\n", "params.yaml: expected a mapping of sections at the top level"),
        ("train: [\n", "params.yaml: not valid YAML"),
    ],
)
def test_bad_params_name_the_key(tmp_path, text, expected):
    with pytest.raises(MRLError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(MRLError, match="nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, yaml.safe_dump({"train": {"epochs": 2}}))
    assert load_config(path, ["train.epochs=5", "model.nesting_dims=[4, 8]", "model.embedding_dim=8"]).train.epochs == 5
    with pytest.raises(MRLError, match="train.epochs: Input should be greater than 0"):
        load_config(path, ["train.epochs=0"])
    with pytest.raises(MRLError, match="must look like section.key=value"):
        load_config(path, ["epochs=3"])


def test_config_round_trips_through_json():
    cfg = load_config(None, ["model.nesting_dims=[2, 4]", "model.embedding_dim=4"])
    assert Config.model_validate(cfg.model_dump(mode="json")) == cfg


def test_scientific_notation_is_a_number(tmp_path):
    # PyYAML's YAML 1.1 rules read 1e-4 as a string; params files write learning rates that way.
    assert load_config(write(tmp_path, "train:\n  lr: 1e-4\n"), ["train.weight_decay=5e-2"]).train.lr == 1e-4

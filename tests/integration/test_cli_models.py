"""The registry, index and search commands end to end through Typer's CliRunner, over the session's shared tiny models
registered into an MLflow sqlite store and a Milvus Lite file of each test's own: each command's output and exit code 0,
and each bad input as one line naming the file or field, exit code 2, with the registry aliases and the serving alias
where they were. (Commands that need no model: tests/unit/test_cli.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import SERVICE_PARAMS, invoke, ok, one_line_error
from PIL import Image

from mrl.data import load_dataset
from mrl.registry import aliases
from mrl.retrieval import milvus_index as mi

pytestmark = pytest.mark.slow  # MLflow model logging and Milvus Lite: seconds per command

NAME = "fashion-mnist-mrl"


def versions(uri: str) -> int:
    import mlflow

    return len(mlflow.MlflowClient(uri).search_model_versions(f"name='{NAME}'"))


# --- registry: register, promote-model, models, rollback-model ----------------------------------------------------

def test_register_gate_list_and_roll_back_models(tiny_models, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = ["--tracking-uri", uri]
    assert ok(invoke("model", "list", *store)) == [f"{NAME}@champion: (none)", f"{NAME}@challenger: (none)"]
    one_line_error(invoke("model", "promote", *store),
                   f"{NAME}: no 'challenger' alias to promote; run `mrl model register` first")
    one_line_error(invoke("model", "rollback", *store), f"{NAME}: has no 'champion' alias to roll back")

    model, metrics = tiny_models.model(0)
    one_line_error(invoke("model", "register", "--model", model, "--metrics", tmp_path / "missing.json", *store),
                   "missing.json: metrics file not found")
    assert versions(uri) == 0
    lines = ok(invoke("model", "register", "--model", model, "--metrics", metrics, "--out", tmp_path / "reg.json", *store))
    assert lines[-1].startswith(f"registered {NAME} v1 (run ") and lines[-1].endswith(") as challenger")
    assert json.loads((tmp_path / "reg.json").read_text())["registration"]["version"] == "1"

    # The gate refuses v1 below the floor: the dims named, no alias moved.
    worst = min(row["knn_top1"] for row in json.loads(metrics.read_text()).values())
    one_line_error(invoke("model", "promote", *store, "--set", f"registry.min_first={worst + 0.001}"),
                   f"{NAME} v1 not promoted: knn_top1 below floor {worst + 0.001} at dims [")
    assert aliases(NAME, uri) == {"champion": None, "challenger": "1"}

    lines = ok(invoke("model", "promote", *store, "--set", "registry.min_first=0", "--out", tmp_path / "gate.json"))
    assert lines[-1] == f"{NAME} v1 is champion" and any(line.startswith("| 16 |") for line in lines)
    assert json.loads((tmp_path / "gate.json").read_text())["promoted"] is True
    assert aliases(NAME, uri) == {"champion": "1", "challenger": "1"}

    # v2 registered and gated in one command (a tolerance any model passes), then rolled back to v1.
    model, metrics = tiny_models.model(1)
    lines = ok(invoke("model", "register", "--model", model, "--metrics", metrics, "--gate", "--set", "registry.tolerance=1",
                      *store))
    assert lines[-1] == f"{NAME} v2 is champion (and challenger)"
    assert [line.split("  (")[0] for line in ok(invoke("model", "list", *store))] == [f"{NAME}@champion: v2",
                                                                                f"{NAME}@challenger: v2"]
    assert ok(invoke("model", "rollback", *store)) == [f"{NAME}: champion moved from v2 back to v1"]
    assert aliases(NAME, uri) == {"champion": "1", "challenger": "2"}
    one_line_error(invoke("model", "rollback", *store), f"{NAME}: champion v1 has no previous champion to roll back to")
    assert aliases(NAME, uri) == {"champion": "1", "challenger": "2"}
    assert versions(uri) == 2


def test_promote_model_names_an_unknown_version_in_one_line(tiny_models, tmp_path):
    setup = tiny_models.register(tmp_path, seeds=[0])
    one_line_error(invoke("model", "promote", "--version", "7", "--tracking-uri", setup["uri"]), f"{NAME}", "7")
    assert aliases(NAME, setup["uri"]) == {"champion": None, "challenger": "1"}


# --- index: promote, search, rollback-index ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registered(tiny_models, tmp_path_factory):
    """v1 and v2 of the shared tiny models in a store of this module's. The tests promote by --version, never moving
    an alias; each has its own Milvus Lite file."""
    return tiny_models.register(tmp_path_factory.mktemp("cli"), seeds=[0, 1])


@pytest.fixture
def index_args(registered, tmp_path):
    """--tracking-uri, --milvus-uri (a fresh Milvus Lite file) and the small-run params as --set."""
    sets = [a for p in [*SERVICE_PARAMS, f"drift.reference_dir={tmp_path / 'refs'}"] for a in ("--set", p)]
    return ["--tracking-uri", registered["uri"], "--milvus-uri", str(tmp_path / "milvus.db"), *sets]


def milvus_only(index_args) -> list[str]:
    """The arguments without --tracking-uri, which rollback-index does not take."""
    return index_args[2:]


def serving(index_args) -> tuple[str | None, list[str]]:
    client = mi.connect(index_args[3])
    try:
        return mi.alias_target(client, "items"), sorted(mi.versioned_collections(client, "items"))
    finally:
        client.close()


def test_promote_search_and_roll_back_the_index(registered, index_args, tmp_path):
    data = registered["data"]
    lines = ok(invoke("index", "promote", "--data", data, "--version", "1", "--out", tmp_path / "p1.json", *index_args))
    assert any(line.startswith("chosen funnel ") for line in lines)
    record = json.loads((tmp_path / "p1.json").read_text())
    assert (record["collection"], record["previous"], record["rows"]) == ("items_v1", None, 320)
    assert record["verify_recall"] >= 0.9
    ok(invoke("index", "promote", "--data", data, "--version", "2", *index_args))
    assert serving(index_args) == ("items_v2", ["items_v1", "items_v2"])

    # By id: the served collection, the item itself first, and the stage timings.
    lines = ok(invoke("search", "--id", "fmnist-test-00003", "--k", "5", *index_args))
    header = next(i for i, line in enumerate(lines) if "neighbours of fmnist-test-00003" in line)
    assert lines[header].startswith("items_v2 (model v2, funnel ")
    assert lines[header + 1].split()[:2] == ["1.", "fmnist-test-00003"] and lines[header + 5].split()[0] == "5."
    assert lines[-1].startswith("  timings: ")
    # By image: embedded by the model that built the served collection (v2), found first.
    ds = load_dataset(data)
    row = int(np.flatnonzero(ds.ids == "fmnist-test-00003")[0])
    Image.fromarray(ds.x[row, 0]).save(tmp_path / "query.png")
    lines = ok(invoke("search", "--image", tmp_path / "query.png", "--k", "3", *index_args))
    header = next(i for i, line in enumerate(lines) if "neighbours of" in line)
    assert lines[header + 1].split()[:2] == ["1.", "fmnist-test-00003"]
    assert lines[header + 1].endswith(f"  {ds.classes[ds.labels[row]]}")  # the label, last

    assert ok(invoke("index", "rollback", *milvus_only(index_args)))[-1] == "alias items: items_v2 -> items_v1"
    assert serving(index_args) == ("items_v1", ["items_v1", "items_v2"])
    one_line_error(invoke("index", "rollback", *milvus_only(index_args)), "no previous collection")
    assert serving(index_args)[0] == "items_v1"
    one_line_error(invoke("index", "promote", "--data", data, "--version", "1", *index_args),
                   "Milvus alias items already serves", " v1 (items_v1); nothing to promote")
    assert serving(index_args) == ("items_v1", ["items_v1", "items_v2"])


def test_index_commands_refuse_bad_input_and_leave_the_index(registered, index_args, tmp_path):
    data = registered["data"]
    ok(invoke("index", "promote", "--data", data, "--version", "1", *index_args))
    before = serving(index_args)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    for args, fragments in [
        (["index", "promote", "--data", tmp_path / "missing.npz", "--version", "2"], ["missing.npz"]),
        (["index", "promote", "--data", tmp_path / "junk.npz", "--version", "2"], ["junk.npz"]),
        (["search", "--id", "no-such-item"], ["unknown item id 'no-such-item'"]),
        (["search", "--image", tmp_path / "missing.png"], ["missing.png: file not found"]),
        (["search", "--image", tmp_path / "junk.png"], ["junk.png: not a readable image"]),
    ]:
        one_line_error(invoke(*args, *index_args), *fragments)
        assert serving(index_args) == before, args
    for args, fragments in [
        (["index", "rollback", "--videos"], ["Milvus alias videos does not exist; nothing to roll back"]),
        (["index", "rollback", "--set", "retrieval.collection_prefix=nothing"], ["alias nothing does not exist"]),
    ]:
        one_line_error(invoke(*args, *milvus_only(index_args)), *fragments)
        assert serving(index_args) == before, args
    assert aliases(NAME, registered["uri"])["champion"] is None  # promote --version never moves the registry's alias


def test_promote_names_an_unknown_version_in_one_line(registered, index_args):
    one_line_error(invoke("index", "promote", "--data", registered["data"], "--version", "7", *index_args),
                   f"{NAME}: no model version '7' in the registry")
    assert serving(index_args) == (None, [])

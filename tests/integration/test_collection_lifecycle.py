"""A collection the alias just left survives promotions for retrieval.drop_grace_s (replicas may still serve it), and
`mrl index unlock` releases a dead promotion's lock. Real Milvus Lite, collections made directly (no model)."""

import pytest
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import load_config
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import Funnel
from mrl.retrieval.lifecycle import drop_old_collections, rollback_index

pytestmark = pytest.mark.slow  # a Milvus Lite server per test (2-3 s each on 2 busy cores)


@pytest.fixture
def milvus(tmp_path):
    uri = str(tmp_path / "milvus.db")
    client = mi.connect(uri)
    yield client, uri
    client.close()


def promote_empty(client, version: int) -> None:
    """What a promotion does to the collections and the alias, without rows: create items_v<N>, swap the alias."""
    previous = mi.alias_target(client, "items")
    info = mi.CollectionInfo(f"items_v{version}", "m", str(version), Funnel(4, 20, (8,), 4), [4, 8], 10, previous)
    mi.create_collection(client, info, 8, "FLAT", 16, 40)
    mi.swap_alias(client, "items", info.name, expected=previous)


def test_a_collection_the_alias_just_left_is_kept_for_the_grace_period(milvus):
    client, _ = milvus
    for version in (1, 2, 3):
        promote_empty(client, version)
    assert mi.replaced_at(client, "items_v1") is not None and mi.replaced_at(client, "items_v3") is None
    said = []
    assert drop_old_collections(client, "items", 2, grace_s=600, log=said.append) == []  # v1 left seconds ago
    assert "items_v1" in client.list_collections() and "drop_grace_s" in said[0]
    assert drop_old_collections(client, "items", 2, grace_s=0) == ["items_v1"]
    assert mi.versioned_collections(client, "items") == ["items_v2", "items_v3"]


def test_rollback_marks_the_collection_it_leaves(milvus):
    client, uri = milvus
    for version in (1, 2):
        promote_empty(client, version)
    assert rollback_index(load_config(None), uri) == ("items_v2", "items_v1")
    assert mi.replaced_at(client, "items_v2") is not None


def test_unlock_index_releases_a_dead_promotions_lock(milvus):
    client, uri = milvus
    mi.acquire_promotion_lock(client, "items", "items_v7")
    client.close()  # Milvus Lite: one process at a time on the file
    runner = CliRunner()
    out = runner.invoke(app, ["index", "unlock", "--milvus-uri", uri])
    assert out.exit_code == 0, out.output
    assert "released the promotion lock of alias items: held by items_v7" in out.output
    again = runner.invoke(app, ["index", "unlock", "--milvus-uri", uri])
    assert again.exit_code == 2 and "no promotion lock is held" in again.output
    client = mi.connect(uri)
    assert mi.lock_holder(client, "items") is None
    client.close()


def test_a_held_lock_names_the_command_that_releases_it(milvus):
    client, _ = milvus
    mi.acquire_promotion_lock(client, "items", "items_v7")
    with pytest.raises(Exception, match="mrl index unlock"):
        mi.acquire_promotion_lock(client, "items", "items_v8")

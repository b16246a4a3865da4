"""Text ingest: a tiny table in each format with both forms of pairs, the embedding cache, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import TextConfig
from mrl.data import load_dataset
from mrl.errors import MRLError
from mrl.ingest import ingest
from mrl.text.artifact import load_text_dataset
from mrl.text.encoder import load_encoder, resolve_model_dir

DOCS = [("cat", "cat", "animal"), ("dog", "dog", "animal"), ("apple", "apple", "food"), ("car", "car", None),
        ("piano", "piano", None)]
QUERIES = [("q1", "a small domesticated feline", "cat", "train"), ("q2", "a loyal pet that barks", "dog", "train"),
           ("q3", "a red or green fruit", "apple", "test"), ("q4", "a vehicle with four wheels", "car", "train")]


def form1_rows() -> list[dict]:
    """One table: documents, then queries naming their positive document."""
    return ([{"id": i, "text": t, "label": lab} for i, t, lab in DOCS]
            + [{"id": i, "text": t, "positive": p, "split": s} for i, t, p, s in QUERIES])


def write_table(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n" for row in rows))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> TextConfig:
    return TextConfig(cache_dir=str(tmp_path / "cache"))


def run(table: Path, cfg: TextConfig, out: Path, pairs: Path | None = None):
    return ingest("text", table, out, None, cfg, pairs, log=lambda _: None)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_ingest_form1_each_format(tmp_path, cfg, suffix):
    table = write_table(tmp_path / f"table{suffix}", form1_rows())
    r = run(table, cfg, tmp_path / "text.npz")
    assert (r.kind, r.n_train, r.n_test, r.item_shape) == ("text", 3, 1, (384,))
    td = load_text_dataset(r.path)
    assert td.documents.ids.tolist() == [d[0] for d in DOCS]
    assert td.doc_texts.tolist() == [d[1] for d in DOCS]
    assert td.query_ids.tolist() == [q[0] for q in QUERIES]
    assert td.query_split.tolist() == [q[3] for q in QUERIES]
    assert [td.documents.ids[d] for d in td.pair_doc] == [q[2] for q in QUERIES]
    assert td.documents.classes.tolist() == ["animal", "food"]
    assert td.documents.labels.tolist() == [0, 0, 1, -1, -1]
    # the vectors are the encoder's own embeddings of the texts
    model = load_encoder(resolve_model_dir(""))
    np.testing.assert_allclose(td.documents.x[0], model.encode(["cat"])[0], atol=1e-5)
    np.testing.assert_allclose(td.query_x[2], model.encode(["a red or green fruit"])[0], atol=1e-5)
    # the rest of the platform reads the documents as a plain vectors dataset
    ds = load_dataset(r.path)
    assert ds.kind == "vectors" and ds.x.shape == (5, 384) and (ds.split == "train").all()


def test_ingest_form2_pairs_file(tmp_path, cfg):
    docs = write_table(tmp_path / "docs.csv", [{"id": i, "text": t} for i, t, _ in DOCS])
    pairs = write_table(tmp_path / "pairs.jsonl", [
        {"query": "a pet", "document": "cat"}, {"query": "a pet", "document": "dog"},  # one query, two documents
        {"query": "a pet", "document": "dog"},  # a repeated pair counts once
        {"query": "something to play music on", "document": "piano"},
        {"query": "a fruit", "document": "apple"},
    ])
    td = load_text_dataset(run(docs, cfg, tmp_path / "text.npz", pairs).path)
    assert td.query_texts.tolist() == ["a pet", "something to play music on", "a fruit"]
    assert list(zip(td.pair_query.tolist(), td.pair_doc.tolist())) == [(0, 0), (0, 1), (1, 4), (2, 2)]
    assert sorted(td.query_split.tolist()) == ["test", "train", "train"]  # no split column: round(0.15 x 3) -> 1 test


def test_cache_second_run_embeds_nothing(tmp_path, cfg, monkeypatch):
    from sentence_transformers import SentenceTransformer

    table = write_table(tmp_path / "table.jsonl", form1_rows())
    calls = []
    encode = SentenceTransformer.encode
    monkeypatch.setattr(SentenceTransformer, "encode", lambda self, texts, **kw: calls.append(len(texts)) or
                        encode(self, texts, **kw))
    first = run(table, cfg, tmp_path / "a.npz").details.embedding
    assert (first.unique, first.cached, first.embedded) == (9, 0, 9) and sum(calls) == 9
    shards = sorted((tmp_path / "cache").rglob("shard-*.npz"))
    assert len(shards) == 1
    calls.clear()
    second = run(table, cfg, tmp_path / "b.npz").details.embedding
    assert (second.cached, second.embedded) == (9, 0) and calls == []
    assert sorted((tmp_path / "cache").rglob("shard-*.npz")) == shards
    a, b = load_text_dataset(tmp_path / "a.npz"), load_text_dataset(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.query_x, b.query_x)
    # one new text: only it goes through the model
    write_table(table, [*form1_rows(), {"id": "q5", "text": "a large stringed keyboard instrument", "positive": "piano",
                                        "split": "test"}])
    third = run(table, cfg, tmp_path / "c.npz").details.embedding
    assert (third.cached, third.embedded) == (9, 1) and calls == [1]


BAD = {
    "empty text": (".csv", lambda rows: rows[2].update(text="  "), "table.csv: row 3: empty text in column 'text'"),
    "duplicate id": (".jsonl", lambda rows: rows[6].update(id="cat"),
                     "table.jsonl: line 7: duplicate id 'cat' (first at line 1)"),
    "missing pair target": (".parquet", lambda rows: rows[5].update(positive="zebra"),
                            "table.parquet: row 6: positive 'zebra' in column 'positive' is not the id of a document"),
    "missing text column": (".csv", lambda rows: [row.pop("text") for row in rows],
                            "table.csv: missing text column 'text'"),
    "bad split": (".jsonl", lambda rows: rows[8].update(split="dev"),
                  "table.jsonl: line 9: split 'dev' in column 'split' (expected train or test)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_error(tmp_path, cfg, case):
    suffix, spoil, message = BAD[case]
    rows = form1_rows()
    spoil(rows)
    table = write_table(tmp_path / f"table{suffix}", rows)
    with pytest.raises(MRLError) as e:
        run(table, cfg, tmp_path / "text.npz")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "text.npz").exists() and not (tmp_path / "cache").exists()  # nothing embedded or written


def test_bad_pairs_file(tmp_path, cfg):
    docs = write_table(tmp_path / "docs.csv", [{"id": i, "text": t} for i, t, _ in DOCS])
    pairs = write_table(tmp_path / "pairs.csv", [{"query": "a pet", "document": "cat"},
                                                 {"query": "a striped horse", "document": "zebra"}])
    with pytest.raises(MRLError, match=r"pairs.csv: row 2: document 'zebra' in column 'document' is not an id in"):
        run(docs, cfg, tmp_path / "text.npz", pairs)
    no_column = write_table(tmp_path / "pairs2.csv", [{"question": "a pet", "document": "cat"}])
    with pytest.raises(MRLError, match=r"pairs2.csv: missing query column 'query'"):
        run(docs, cfg, tmp_path / "text.npz", no_column)
    with pytest.raises(MRLError, match=r"docs.csv: no pairs: missing positive column 'positive'"):
        run(docs, cfg, tmp_path / "text.npz")


def test_cli_error_exit_2_and_configurable_columns(tmp_path):
    rows = [{"doc_id" if k == "id" else k: v for k, v in row.items()} for row in form1_rows()]
    table = write_table(tmp_path / "table.jsonl", rows)
    out = tmp_path / "text.npz"
    runner = CliRunner()
    args = ["ingest", "--source", "text", "--input", str(table), "--output", str(out),
            "--set", f"text.cache_dir={tmp_path / 'cache'}"]
    bad = runner.invoke(app, args)
    assert bad.exit_code == 2 and "missing id column 'id'" in bad.output and not out.exists()
    good = runner.invoke(app, [*args, "--set", "text.id_column=doc_id"])
    assert good.exit_code == 0, good.output
    assert "5 documents, 4 queries (3 train, 1 test), 4 pairs, 384 dims" in good.output


def test_model_must_be_a_local_directory(tmp_path):
    with pytest.raises(MRLError, match="text.model: .* is not a local sentence-transformers model directory"):
        resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2")
    assert (resolve_model_dir("") / "modules.json").is_file()

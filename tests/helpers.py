"""Tiny, learnable data written in the real input formats (idx.gz, Parquet), and small-run params."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

NUM_CLASSES = 10  # as many as Fashion-MNIST declares, so class-balance checks see every class
REPO = Path(__file__).resolve().parents[1]
SMALL_PARAMS = {  # a model and run small enough for seconds-long pipeline tests
    "model": {"embedding_dim": 16, "nesting_dims": [4, 8, 16], "cnn_widths": [8, 16, 16]},
    "train": {"epochs": 1, "batch_size": 32},
    "evaluate": {"recall_ks": [1], "probe_epochs": 20},
    "registry": {"min_first": 0.3},
    "retrieval": {"candidate_d0": [4, 8], "candidate_k0": [20, 60], "cascades": [[16]], "max_queries": 60,
                  "verify_queries": 60, "target_recall": 0.9, "insert_batch": 200,
                  # exact shortlist: the tiny synthetic set is full of near-ties that make HNSW recall flaky
                  "index_type": "FLAT"},
    # small windows and few calibration draws: the catalogue has a few hundred rows
    "drift": {"window_size": 100, "min_window": 20, "reference_size": 150, "calibration_pool": 250,
              "calibration_draws": 30},
}


def synthetic_images(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Class c is a bright 5x5 square in cell c of a 3x4 grid on a noisy background: easy, but needs learning."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, q = (c // 4) * (size // 3) + 2, (c % 4) * (size // 4) + 1
        images[i, r:r + 5, q:q + 5] = rng.integers(180, 255)
    return images, labels


def write_idx(path: Path, array: np.ndarray, magic_ndim: int | None = None) -> Path:
    ndim = array.ndim if magic_ndim is None else magic_ndim
    header = struct.pack(">HBB", 0, 0x08, ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_embeddings_table(path: Path, vectors: list, ids=None, labels=None, splits=None) -> Path:
    n = len(vectors)
    columns = {"id": ids if ids is not None else [f"item-{i}" for i in range(n)], "embedding": vectors}
    if labels is not None:
        columns["label"] = labels
    if splits is not None:
        columns["split"] = splits
    pq.write_table(pa.table(columns), path)
    return path


def write_fashion_mnist(directory: Path, n_train: int, n_test: int) -> Path:
    """The four Fashion-MNIST idx.gz files with synthetic images."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_images(n, seed)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


def small_params(raw_dir: Path, **changes: dict) -> str:
    """The repository's params.yaml (every key, as DVC's templating needs) with small-run changes."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    work = raw_dir.parent  # drift files next to the raw data, never in the repository's artifacts/
    drift = SMALL_PARAMS["drift"] | {"reference_dir": str(work / "drift-refs"), "workspace": str(work / "drift-ws")}
    for section, values in ({**SMALL_PARAMS, "ingest": {"input": str(raw_dir)}, "drift": drift} | changes).items():
        params[section] = params[section] | values
    return yaml.safe_dump(params, sort_keys=False)


SERVICE_PARAMS = ["model.nesting_dims=[4, 8, 16]", "model.embedding_dim=16", "model.cnn_widths=[8, 16, 16]",
                  "train.batch_size=32", "train.epochs=1", "evaluate.recall_ks=[1]", "evaluate.probe_epochs=10",
                  "retrieval.candidate_d0=[4, 8]", "retrieval.candidate_k0=[20, 60]", "retrieval.cascades=[[16]]",
                  "retrieval.max_queries=60", "retrieval.verify_queries=60", "retrieval.target_recall=0.9",
                  "retrieval.insert_batch=100",
                  "retrieval.index_type=FLAT"]  # exact shortlist: see test_index_and_service's test_hnsw_shortlist


def registered_tiny_models(tmp: Path, seeds=range(3)) -> dict:
    """A Fashion-MNIST-format dataset (240 train, 80 test) and one registered version of a tiny model per seed
    (version n+1 from seed n), in an MLflow sqlite store under `tmp`."""
    from mrl.config import IngestConfig, load_config
    from mrl.evaluate import evaluate
    from mrl.ingest import ingest
    from mrl.registry import register_model
    from mrl.tracking import log_training_run
    from mrl.train import train

    data = ingest("fashion_mnist", write_fashion_mnist(tmp / "raw", 240, 80), tmp / "ds.npz", IngestConfig()).path
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = load_config(None, SERVICE_PARAMS)
    for seed in seeds:
        model_cfg = load_config(None, [*SERVICE_PARAMS, f"train.seed={seed}"])
        model = train(model_cfg, data, tmp / f"m{seed}.pt", log=lambda _: None).path
        evaluate(model, data, model_cfg.evaluate, tmp / f"m{seed}.json")
        register_model(log_training_run(model, tmp / f"m{seed}.json", None, uri), cfg.registry.model_name, uri)
    return {"data": data, "uri": uri, "cfg": cfg, "tmp": tmp}


def dvc_project(repo: Path, params_text: str, items=("dvc.yaml", ".dvcignore", "mrl")) -> None:
    """A fresh git repository at `repo` with the project's `items` (DVC pipelines and the code their stages depend on),
    its .dvc config and `params_text` as params.yaml, all committed: what `dvc repro` needs."""
    ignore = shutil.ignore_patterns("__pycache__", "tmp", "cache")
    for item in items:
        (repo / item).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, repo / item, ignore=ignore)
        else:
            shutil.copy(REPO / item, repo / item)
    shutil.copytree(REPO / ".dvc", repo / ".dvc", ignore=ignore)
    (repo / "params.yaml").write_text(params_text)
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)


class TinyModels:
    """The tests' shared tiny image models (the session-scoped `tiny_models` fixture in conftest.py): trained with
    SERVICE_PARAMS on one Fashion-MNIST-format dataset (240 train, 80 test), each seed once per session, on first use.
    Read-only: tests register them into MLflow stores of their own (`register`), never into a shared one."""

    def __init__(self, root: Path):
        from mrl.config import IngestConfig
        from mrl.ingest import ingest

        self.root = root
        self.raw = write_fashion_mnist(root / "raw", 240, 80)
        self.data = ingest("fashion_mnist", self.raw, root / "ds.npz", IngestConfig()).path
        self._trained: dict[int, tuple[Path, Path]] = {}

    def model(self, seed: int = 0) -> tuple[Path, Path]:
        """(checkpoint, per-dim metrics JSON) of the model trained with train.seed=`seed` (1 epoch)."""
        if seed not in self._trained:
            from mrl.config import load_config
            from mrl.evaluate import evaluate
            from mrl.train import train

            cfg = load_config(None, [*SERVICE_PARAMS, f"train.seed={seed}"])
            model = train(cfg, self.data, self.root / f"m{seed}.pt", log=lambda _: None).path
            evaluate(model, self.data, cfg.evaluate, self.root / f"m{seed}.json")
            self._trained[seed] = (Path(model), self.root / f"m{seed}.json")
        return self._trained[seed]

    def register(self, tmp: Path, seeds=range(3), overrides=()) -> dict:
        """As registered_tiny_models, without training: one registered version per seed (version n+1 from seed n) in
        a fresh MLflow sqlite store under `tmp`; "cfg" is SERVICE_PARAMS plus `overrides`."""
        from mrl.config import load_config
        from mrl.registry import register_model
        from mrl.tracking import log_training_run

        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        cfg = load_config(None, [*SERVICE_PARAMS, *overrides])
        for seed in seeds:
            model, metrics = self.model(seed)
            register_model(log_training_run(model, metrics, None, uri), cfg.registry.model_name, uri)
        return {"data": self.data, "raw": self.raw, "uri": uri, "cfg": cfg, "tmp": tmp}


TEXT_WORDS = {  # a tiny text corpus: document -> (train query, test query)
    "cat": ("a small domesticated feline", "a pet that purrs and catches mice"),
    "dog": ("a loyal pet that barks", "an animal people walk on a leash"),
    "apple": ("a red or green fruit", "a round fruit that grows on trees"),
    "car": ("a vehicle with four wheels", "what you drive on a motorway"),
    "piano": ("a large keyboard instrument", "a musical instrument with hammers and strings"),
    "river": ("a stream of water flowing to the sea", "a large natural flow of water"),
    "winter": ("the coldest season of the year", "the season of snow"),
    "bread": ("a food baked from flour", "a loaf from the bakery"),
    "ship": ("a large boat that crosses oceans", "a vessel for carrying cargo by sea"),
    "book": ("pages bound together to read", "a novel printed on paper"),
    "mountain": ("a very high hill", "a peak climbers try to reach"),
    "doctor": ("a person who treats the sick", "a physician at a hospital"),
}
TEXT_PARAMS = [  # small runs over it
    "text.nesting_dims=[8, 64, 384]", "text.epochs=2", "text.batch_size=8", "text.hidden_dim=32", "text.eval_k=3",
    "train.num_threads=1", "registry.model_name=text-mrl", "registry.min_first=0.3",
    "validation.min_train_items=5", "validation.min_test_items=5",
    "retrieval.k=3", "retrieval.candidate_d0=[8, 64]", "retrieval.candidate_k0=[6, 10]", "retrieval.cascades=[[384]]",
    "retrieval.candidate_binary_d0=[64]", "retrieval.target_recall=0.9", "retrieval.index_type=FLAT",
]


def write_text_table(path: Path) -> Path:
    """TEXT_WORDS as a JSONL text table: each word a document, two queries naming it (one train, one test)."""
    import json

    rows = [{"id": word, "text": word} for word in TEXT_WORDS]
    rows += [{"id": f"q-{word}-{split}", "text": query, "positive": word, "split": split}
             for word, queries in TEXT_WORDS.items() for query, split in zip(queries, ("train", "test"))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- CLI tests: run a command, read what it said

def invoke(*args):
    """`mrl <args>` in process (typer's CliRunner); arguments may be paths."""
    from typer.testing import CliRunner

    from mrl.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result) -> list[str]:
    """Exit code 0; the lines the command printed (stdout: MLflow's and Milvus' own logs go to stderr)."""
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def one_line_error(result, *fragments: str) -> str:
    """Exit code 2 and one error line, the last, holding each fragment (progress lines may come before it)."""
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert result.exit_code == 2 and errors == lines[-1:], (result.exit_code, result.output)
    assert all(f in errors[0] for f in fragments), errors[0]
    return errors[0]

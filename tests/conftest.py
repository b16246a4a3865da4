"""Fixtures: tiny, learnable datasets in the real input formats (idx.gz, image folders, Parquet), and the tiny
trained models the integration tests share."""

from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TinyModels, synthetic_images, write_embeddings_table, write_fashion_mnist
from PIL import Image


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


@pytest.fixture(scope="session", autouse=True)
def project_mlruns_untouched():
    """Tests track into temp sqlite stores whose artifacts live beside them; none may write MLflow runs into
    the project's ./mlruns (the artifact root of the default ./mlflow.db, and MLflow's own default)."""
    root = REPO / "mlruns"
    before = _files(root)
    yield
    changed = sorted(k for k, v in _files(root).items() if before.get(k) != v)
    assert not changed, f"tests wrote into {root}: {changed[:5]}"


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    """The four Fashion-MNIST idx.gz files, 240 train and 80 test items."""
    return write_fashion_mnist(tmp_path / "fmnist", 240, 80)


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    """Fashion-MNIST-format input for pipeline runs: 300 train and 100 test images."""
    return write_fashion_mnist(tmp_path / "raw", 300, 100)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    images, labels = synthetic_images(40, 2, size=32)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def embeddings_table(tmp_path: Path) -> Path:
    """200 labeled 24-dim vectors in 4 classes: class means apart, so an adapter can learn them."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 200)
    means = rng.normal(0, 2, (4, 24))
    vectors = (means[labels] + rng.normal(0, 1, (200, 24))).astype(np.float32)
    return write_embeddings_table(
        tmp_path / "emb.parquet", [v.tolist() for v in vectors], labels=[f"c{c}" for c in labels],
        splits=["test" if i % 5 == 0 else "train" for i in range(200)],
    )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    """Tiny models trained once per session (each seed on first use) and shared by the modules that need "a trained
    model" rather than training itself: the index and service, CLI, video and browser tests. Tests register them into
    their own MLflow stores (`tiny_models.register(tmp_path)`), so no registry state is shared."""
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))

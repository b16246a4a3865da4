"""The paper's central comparison on Fashion-MNIST (Kusupati et al., 2022, Fig. 2-3).

For every dim from 2 to 512: MRL (nested heads), MRL-E (tied head), FF (an independent model trained at
exactly that size) and SVD truncation of FF-512's embedding, on linear-probe top-1, 1-NN top-1 and
mAP@10. Also the wall-clock training overhead of MRL over FF-512, measured in the same run.
All models share the encoder, data, epochs and seed; only the objective and the embedding size differ.

    python bench/quality.py --data-dir /usr/share/datasets/fashion-mnist --out bench/results/quality.md
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mrl.checkpoint import load_model
from mrl.config import config_from_dict
from mrl.data.artifact import save_dataset
from mrl.data.readers import read_fashion_mnist
from mrl.evaluate import embed_items, evaluate_embeddings
from mrl.train import train

DIMS = [2, 4, 8, 16, 32, 64, 128, 256, 512]  # the default nesting plus 2 and 4, where 10 classes still differ
METRICS = {"linear_top1": "linear-probe top-1", "knn_top1": "1-NN top-1", "map_at_10": "mAP@10"}


def run_model(name: str, objective: str, dims: list[int], data: Path, work: Path, epochs: int, log) -> dict:
    cfg = config_from_dict({
        "model": {"embedding_dim": dims[-1], "nesting_dims": dims},
        "loss": {"objective": objective},
        "train": {"epochs": epochs},
        "evaluate": {"recall_ks": [1]},
    })
    path = work / f"{name}.pt"
    result = train(cfg, data, path, log=lambda line: log(f"  {name}: {line}"))
    model = load_model(path)
    return {"train_seconds": result.seconds, "model": model, "cfg": cfg}


def embeddings(model, ds_train, ds_test) -> tuple[np.ndarray, np.ndarray]:
    return embed_items(model.encoder, ds_train.x, 1024), embed_items(model.encoder, ds_test.x, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default="bench/results/quality.md")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {line}", flush=True)

    ds = read_fashion_mnist(args.data_dir)
    train_ds, test_ds = ds.subset("train"), ds.subset("test")
    results: dict[str, dict[int, dict[str, float]]] = {"MRL": {}, "MRL-E": {}, "FF": {}, "SVD": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = save_dataset(ds, work / "fashion_mnist.npz")
        eval_cfg = None
        for name, objective in (("MRL", "mrl"), ("MRL-E", "mrl_e")):
            log(f"training {name} at dims {DIMS}")
            run = run_model(name, objective, DIMS, data, work, args.epochs, log)
            eval_cfg = run["cfg"].evaluate
            tr, te = embeddings(run["model"], train_ds, test_ds)
            results[name] = evaluate_embeddings(tr, train_ds.labels, te, test_ds.labels, DIMS, eval_cfg)
            results[name + " train s"] = run["train_seconds"]
            log(f"{name}: " + ", ".join(f"d{m} 1-NN {r['knn_top1']:.3f}" for m, r in results[name].items()))
        for m in DIMS:
            log(f"training FF-{m}")
            run = run_model(f"FF-{m}", "mrl", [m], data, work, args.epochs, log)
            tr, te = embeddings(run["model"], train_ds, test_ds)
            results["FF"][m] = evaluate_embeddings(tr, train_ds.labels, te, test_ds.labels, [m], eval_cfg)[m]
            results[f"FF-{m} train s"] = run["train_seconds"]
            if m == DIMS[-1]:
                # Truncated SVD of FF-512's train embeddings: project onto the top-m right singular vectors.
                _, _, vt = np.linalg.svd(tr.astype(np.float64), full_matrices=False)
                basis = vt.T.astype(np.float32)
                results["SVD"] = evaluate_embeddings(tr @ basis, train_ds.labels, te @ basis, test_ds.labels,
                                                     DIMS, eval_cfg)
            log(f"FF-{m}: 1-NN {results['FF'][m]['knn_top1']:.3f}")

    overhead = results["MRL train s"] / results[f"FF-{DIMS[-1]} train s"]
    overhead_e = results["MRL-E train s"] / results[f"FF-{DIMS[-1]} train s"]
    lines = [
        "# Quality: MRL vs MRL-E vs FF vs SVD on Fashion-MNIST",
        "",
        f"Measured by `bench/quality.py` ({args.epochs} epochs per model, seed 0, full 60k train / 10k test, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads). "
        f"Total bench time {(time.perf_counter() - started) / 60:.1f} min.",
        "",
        "- MRL: one encoder, a linear head per nesting dim. MRL-E: one tied head, prefix m uses W[:, :m].",
        "- FF: an independent model trained with embedding size exactly m (one model per row).",
        "- SVD: truncated SVD of FF-512's embedding (top-m right singular vectors of the train embeddings).",
        "- linear-probe top-1: logistic regression fitted on the frozen train embeddings (same probe for all).",
        "- 1-NN top-1 and mAP@10: cosine search, database = train split, queries = test split, "
        "relevant = same class.",
        "",
    ]
    for key, title in METRICS.items():
        lines += [f"## {title}", "", "| dim | MRL | MRL-E | FF | SVD | MRL - FF |", "|---:|---:|---:|---:|---:|---:|"]
        for m in DIMS:
            row = [results[n][m][key] for n in ("MRL", "MRL-E", "FF", "SVD")]
            lines.append(f"| {m} | " + " | ".join(f"{v:.4f}" for v in row) + f" | {row[0] - row[2]:+.4f} |")
        lines.append("")
    lines += [
        "## Training cost",
        "",
        "| model | train seconds | ratio to FF-512 |",
        "|---|---:|---:|",
        f"| FF-512 | {results[f'FF-{DIMS[-1]} train s']:.1f} | 1.00 |",
        f"| MRL ({len(DIMS)} nested dims) | {results['MRL train s']:.1f} | {overhead:.2f} |",
        f"| MRL-E | {results['MRL-E train s']:.1f} | {overhead_e:.2f} |",
        f"| all {len(DIMS)} FF models together | {sum(results[f'FF-{m} train s'] for m in DIMS):.1f} | "
        f"{sum(results[f'FF-{m} train s'] for m in DIMS) / results[f'FF-{DIMS[-1]} train s']:.2f} |",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

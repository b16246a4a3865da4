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

from mrl.checkpoint import build_model, load_model
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


def step_seconds(objective: str, dims: list[int], x: torch.Tensor, y: torch.Tensor, steps: int = 20,
                 repeats: int = 5) -> list[float]:
    """Seconds per training step (forward, backward, AdamW), measured `repeats` times."""
    cfg = config_from_dict({"model": {"embedding_dim": dims[-1], "nesting_dims": dims}, "loss": {"objective": objective}})
    encoder, loss = build_model(cfg, "images", tuple(x.shape[1:]), 10)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *loss.parameters()], lr=1e-3)
    times = []
    for _ in range(repeats + 1):  # the first round warms up allocators and caches
        start = time.perf_counter()
        for i in range(steps):
            idx = slice(i * 256 % len(x), i * 256 % len(x) + 256)
            value, _ = loss(encoder(x[idx]), y[idx])
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        times.append((time.perf_counter() - start) / steps)
    return times[1:]


def training_overhead(ds_train) -> dict[str, float]:
    """MRL vs FF-512 step time, interleaved round by round so that machine load hits both alike."""
    x, y = torch.from_numpy(ds_train.x[:5120]), torch.from_numpy(ds_train.labels[:5120])
    rounds = {"FF-512": [], "MRL": [], "MRL-E": []}
    for _ in range(3):
        rounds["FF-512"] += step_seconds("mrl", [DIMS[-1]], x, y)
        rounds["MRL"] += step_seconds("mrl", DIMS, x, y)
        rounds["MRL-E"] += step_seconds("mrl_e", DIMS, x, y)
    return {name: float(np.median(t)) for name, t in rounds.items()}


def cost_section(step: dict[str, float], whole_run: dict[str, float] | None) -> list[str]:
    """The training-cost table; `whole_run` (seconds per model) is None when only step times were measured."""
    def run(name: str) -> str:
        return f" {whole_run[name]:.0f} |" if whole_run else ""

    lines = [
        "## Training cost",
        "",
        "Step time: median of 15 rounds of 20 steps (batch 256), the three models interleaved round by round",
        "so that other load on the machine hits each alike." + (" Whole runs: wall time of the training above."
                                                               if whole_run else ""),
        "",
        "| model | ms per step | step ratio to FF-512 |" + (" whole-run seconds |" if whole_run else ""),
        "|---|---:|---:|" + ("---:|" if whole_run else ""),
        f"| FF-512 | {1000 * step['FF-512']:.1f} | 1.00 |{run('FF-512')}",
        f"| MRL ({len(DIMS)} nested dims) | {1000 * step['MRL']:.1f} | {step['MRL'] / step['FF-512']:.2f} |{run('MRL')}",
        f"| MRL-E | {1000 * step['MRL-E']:.1f} | {step['MRL-E'] / step['FF-512']:.2f} |{run('MRL-E')}",
    ]
    if whole_run:
        lines.append(f"| all {len(DIMS)} FF models (what MRL replaces) | | |{run('all FF')}")
    return [*lines, ""]


def embeddings(model, ds_train, ds_test) -> tuple[np.ndarray, np.ndarray]:
    return embed_items(model.encoder, ds_train.x, 1024), embed_items(model.encoder, ds_test.x, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default="bench/results/quality.md")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--timing-only", action="store_true",
                        help="re-measure only the training-step overhead and replace that section of --out")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {line}", flush=True)

    ds = read_fashion_mnist(args.data_dir)
    train_ds, test_ds = ds.subset("train"), ds.subset("test")
    out = Path(args.out)
    if args.timing_only:
        log("timing training steps (interleaved MRL / MRL-E / FF-512)")
        before = out.read_text().split("## Training cost")[0]
        out.write_text(before + "\n".join(cost_section(training_overhead(train_ds), None)))
        print(out.read_text())
        return
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

    log("timing training steps (interleaved MRL / MRL-E / FF-512)")
    step = training_overhead(train_ds)
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
    lines += cost_section(step, {name: results[f"{name} train s"] for name in ("MRL", "MRL-E", "FF-512")}
                          | {"all FF": sum(results[f"FF-{m} train s"] for m in DIMS)})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

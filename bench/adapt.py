"""Adapt benchmark: Matryoshka prefixes for embeddings the project did not train, without re-encoding (`mrl adapt`).

Two sets of vectors nobody made Matryoshka:
  wordnet   all-MiniLM-L6-v2's base vectors (384 dims) of the WordNet corpus of the text benchmark (every lemma and
            every verb/adjective/adverb gloss; mrl.text.wordnet), from the text cache (embedded once)
  photos    a frozen EfficientNet-Lite0's pooled features (1280 dims) of the photo-footage benchmark's training
            crops, where `make bench-photo-video` left them (skipped otherwise)
For each: the library's own steps (mrl.adapt: split, train the rotation adapter, evaluate), then at every nesting dim
the neighbour recall@10 of held-out vectors against the base's exact top 10 for the adapted prefix, truncation and
PCA of the same vectors; and the funnel chosen as promotion chooses it (mrl.retrieval.choose, FAISS HNSW on one
thread) in each space, with its speed-up over exact full-dim search at recall@10 >= 0.99 of the base's neighbours.

    python bench/adapt.py --out bench/results/adapt.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mrl.adapt.run import split_rows
from mrl.adapt.source import Vectors, checked
from mrl.adapt.train import evaluate_adapter, nesting_dims, train_adapter
from mrl.checkpoint import load_model
from mrl.config import load_config
from mrl.retrieval.choose import candidate_funnels, choose_funnel, measure_funnels
from mrl.text.adapter import apply_adapter
from mrl.text.encoder import embed_texts
from mrl.text.evaluate import fit_pca
from mrl.text.wordnet import DEFAULT_DIR, read_wordnet

THREADS = 2
TARGET = 0.99
PHOTO_FEATURES = "artifacts/bench/photo-video/features"


def wordnet_vectors(wordnet_dir: str, cache_dir: str) -> Vectors:
    rows = read_wordnet(wordnet_dir)
    texts = list(dict.fromkeys(r["text"] for r in rows))
    cfg = load_config(None, [f"text.cache_dir={cache_dir}"]).text
    x, _ = embed_texts(texts, cfg, log=print, desc="base vectors (cached)")
    return checked(Vectors(np.array([f"t{i}" for i in range(len(texts))]), x, None, "wordnet", "wordnet"), "wordnet")


def photo_vectors(folder: str) -> Vectors | None:
    """The largest cached feature array of the photo benchmark (views of the training crops), or None."""
    files = sorted(Path(folder).glob("*.npy"), key=lambda p: p.stat().st_size)
    if not files:
        return None
    x = np.load(files[-1]).astype(np.float32).reshape(-1, 1280)
    return checked(Vectors(np.array([f"p{i}" for i in range(len(x))]), x, None, str(files[-1]), "photos"), "photos")


def funnel_speedups(spaces: dict[str, tuple[np.ndarray, np.ndarray]], dims: list[int], cfg) -> dict[str, dict]:
    """Per space (database, queries): the funnel chosen at recall@10 >= TARGET against exact full-dim search in that
    space, and exact search's latency. Full-dim search is the same in every space (a rotation keeps cosines)."""
    rc = cfg.retrieval.model_copy(update={"cascades": [[dims[-1]], [64, dims[-1]]], "target_recall": TARGET})
    out = {}
    for name, (database, queries) in spaces.items():
        costs = measure_funnels(database, queries, candidate_funnels(rc, dims, ["float32"]), rc)
        chosen, exact = choose_funnel(costs, TARGET), costs[0]
        out[name] = {"funnel": chosen.funnel.name(), "recall": chosen.recall, "p50_ms": chosen.latency_ms,
                     "exact_ms": exact.latency_ms, "speedup": exact.latency_ms / chosen.latency_ms}
        print(f"{name}: {out[name]}")
    return out


def run(vectors: Vectors, work: Path, cfg) -> dict:
    """Split, train, evaluate, and the funnels: what `mrl adapt` does before registering, timed."""
    phases: dict[str, float] = {}
    dims = nesting_dims(list(cfg.adapt.nesting_dims), vectors.dim)
    train, held = split_rows(len(vectors.ids), cfg)
    t = time.perf_counter()
    trained = train_adapter(cfg, vectors.x[train], dims, work / f"adapter-{vectors.name}.pt",
                            {"data": vectors.source, "source": vectors.source, "vectors_sha256": vectors.digest(),
                             "base_dim": vectors.dim, "eval_k": cfg.adapt.eval_k})
    phases["train"] = time.perf_counter() - t
    adapter = load_model(trained.path).encoder
    database, queries = vectors.x[np.setdiff1d(np.arange(len(vectors.ids)), held)], vectors.x[held]
    t = time.perf_counter()
    evaluation = evaluate_adapter(adapter, database, queries, dims, cfg.adapt.eval_k)
    phases["evaluate"] = time.perf_counter() - t
    pca = fit_pca(database, dims[-1])
    t = time.perf_counter()
    spaces = {"adapted": (apply_adapter(adapter, database), apply_adapter(adapter, queries)),
              "truncated": (database, queries), "pca": (pca.transform(database), pca.transform(queries))}
    funnels = funnel_speedups(spaces, dims, cfg)
    phases["choose the funnel in each space"] = time.perf_counter() - t
    return {"vectors": vectors, "dims": dims, "train": len(train), "held": len(held), "evaluation": evaluation,
            "funnels": funnels, "phases": phases, "trained": trained}


def report(results: list[dict], cfg, total_s: float) -> list[str]:
    lines = ["# Adapt: Matryoshka prefixes for embeddings you already have", "",
             "`make bench-adapt` (bench/adapt.py), on vectors the project did not train: all-MiniLM-L6-v2's base "
             "vectors of the WordNet corpus (every lemma and gloss of the text benchmark), and a frozen "
             "EfficientNet-Lite0's pooled features of the photo benchmark's training crops (where `make "
             "bench-photo-video` left them). For each, the library's own steps (mrl.adapt: split, train the rotation "
             "adapter, evaluate) and the funnel chosen as promotion chooses it (mrl.retrieval.choose) in each space.", "",
             f"Adapter: a rotation of the normalized base vector (mrl.adapt.train), {cfg.adapt.epochs} epochs, batch "
             f"{cfg.adapt.batch_size}, lr {cfg.adapt.lr}, tau {cfg.adapt.tau}; {cfg.train.num_threads} torch threads. "
             f"Whole run {total_s / 60:.1f} min on this 2-core machine.", ""]
    for r in results:
        lines += section(r)
    lines += ["## Targets", "", "| target | set | met | measured |", "|---|---|---|---|"]
    for r in results:
        lines += targets(r)
    return lines


def section(r: dict) -> list[str]:
    v, ev, k = r["vectors"], r["evaluation"], r["evaluation"].k
    name = f"recall_at_{k}"
    lines = [f"## {v.name}: {len(v.ids):,} vectors of {v.dim} dims ({v.source})", "",
             f"Trained on {r['train']:,} vectors in {r['phases']['train']:.0f} s "
             f"({r['trained'].items_per_second:,.0f} vectors/s); {r['held']:,} held-out vectors queried against the "
             f"other {ev.documents:,}. Neighbour recall@{k} against the base's exact top {k} at {v.dim} dims "
             f"(standard error at most {np.sqrt(0.25 / (r['held'] * k)):.3f}):", "",
             "| dims | adapted | truncated | PCA | adapted - truncated | adapted - PCA |", "|---:|---:|---:|---:|---:|---:|"]
    for m in r["dims"]:
        a, t, p = (ev.results[method][m][name] for method in ("adapter", "truncated", "pca"))
        lines.append(f"| {m} | {a:.4f} | {t:.4f} | {p:.4f} | {a - t:+.4f} | {a - p:+.4f} |")
    lines += ["", f"Funnels at recall@{k} >= {TARGET} against exact full-dim search in each space (chosen as promotion "
                  "chooses, FAISS HNSW shortlist, p50 of single queries on one thread). In the adapted and truncated "
                  "spaces full-dim search finds exactly the base's neighbours, so that recall is of the base's "
                  "neighbours; PCA's full dim finds only the share in the table above (it is centred), so its funnel "
                  "does not serve the base's neighbours.", "",
              "| space | funnel | recall | p50 ms | exact full-dim ms | speed-up |", "|---|---|---:|---:|---:|---:|"]
    for space, f in r["funnels"].items():
        lines.append(f"| {space} | {f['funnel']} | {f['recall']:.4f} | {f['p50_ms']:.3f} | {f['exact_ms']:.3f} | "
                     f"{f['speedup']:.1f}x |")
    lines += ["", "Phases: " + ", ".join(f"{k} {s:.0f} s" for k, s in r["phases"].items()), ""]
    return lines


def targets(r: dict) -> list[str]:
    ev, name = r["evaluation"], f"recall_at_{r['evaluation'].k}"
    se = np.sqrt(0.25 / (r["held"] * ev.k))
    a, t, p = ({m: ev.results[method][m][name] for m in r["dims"]} for method in ("adapter", "truncated", "pca"))
    full = r["dims"][-1]
    worst_t = min(a[m] - t[m] for m in r["dims"])
    worst_p = min(a[m] - p[m] for m in r["dims"])
    f = r["funnels"]
    rows = [("adapted >= truncation at every dim", worst_t >= -se, f"worst margin {worst_t:+.4f}"),
            ("adapted >= PCA at every dim (within 1 s.e.)", worst_p >= -se, f"worst margin {worst_p:+.4f}"),
            ("full dim keeps the base's neighbours", a[full] >= 1 - se, f"{a[full]:.4f}"),
            ("the adapted funnel is faster than the truncated one", f["adapted"]["p50_ms"] < f["truncated"]["p50_ms"],
             f"{f['adapted']['speedup']:.1f}x vs {f['truncated']['speedup']:.1f}x over exact")]
    return [f"| {what} | {r['vectors'].name} | {'met' if ok else 'not met'} | {measured} |" for what, ok, measured in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", default=DEFAULT_DIR)
    parser.add_argument("--cache-dir", default="artifacts/bench/text-cache", help="the text benchmark's cache")
    parser.add_argument("--work", default="artifacts/bench/adapt")
    parser.add_argument("--out", default="bench/results/adapt.md")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads (1 beside another job)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(None, [f"train.num_threads={args.threads}", *args.overrides])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sets = [wordnet_vectors(args.wordnet_dir, args.cache_dir), photo_vectors(PHOTO_FEATURES)]
    results = [run(v, work, cfg) for v in sets if v is not None]
    lines = report(results, cfg, time.perf_counter() - started)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

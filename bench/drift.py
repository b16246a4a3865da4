"""Drift calibration benchmark: false alarms on unchanged data, detection of realistic shifts, check time.

Fashion-MNIST embedded by a trained model. The reference is built as promotion builds it (`build_reference`:
catalogue = the train split, thresholds calibrated on same-distribution windows from held-back rows). Then,
for each Evidently method:

- false alarms: `--windows` windows of the untouched test split (never seen by calibration);
- detection: the same number of windows of each shift: darker images, lower contrast, rotation, a
  class-prior shift (three classes take half the window), and an unseen class (a reference built without
  "Ankle boot"; windows where ankle boots are a share of the items; its false-alarm windows have none).
  Windows carry no labels, as a query log has none: class shares are nearest-centroid predictions.

Verdicts come from `score_window`, the scores `mrl drift`'s Evidently report computes (the tests check the
two agree), so hundreds of windows take minutes. The time of a full `mrl drift` check (report and all) of a
10k x 512 window is measured separately. About 15 min on 2 cores.

    python bench/drift.py --model artifacts/models/model.pt --out bench/results/drift.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mrl.checkpoint import load_model
from mrl.config import DriftConfig
from mrl.data.readers import read_fashion_mnist
from mrl.drift.calibration import build_reference
from mrl.drift.check import check_drift
from mrl.drift.reference import Reference
from mrl.drift.results import CLASS_TEST
from mrl.drift.scoring import predict_classes, score_window, verdicts
from mrl.evaluate import embed_items

UNSEEN = "Ankle boot"
FALSE_ALARM_TARGET, DETECTION_TARGET = 0.05, 0.95


def darker(x: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(x.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def lower_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    mean = x.astype(np.float32).mean(axis=(1, 2, 3), keepdims=True)
    return np.clip(mean + (x - mean) * factor, 0, 255).astype(np.uint8)


def rotated(x: np.ndarray, degrees: float, seed: int) -> np.ndarray:
    """Each image turned by +-degrees (random sign): a camera or scanner mounted at an angle."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], len(x))
    return np.stack([ndimage.rotate(img[0], s * degrees, reshape=False, order=1)[None] for img, s in zip(x, signs)])


def prior_shift_rows(labels: np.ndarray, favoured: list[int], share: float, n: int, rng) -> np.ndarray:
    weights = np.where(np.isin(labels, favoured), share / np.isin(labels, favoured).sum(),
                       (1 - share) / (~np.isin(labels, favoured)).sum())
    return rng.choice(len(labels), n, replace=False, p=weights)


def rate(ref: Reference, windows: list[np.ndarray], thresholds: dict[str, float]) -> tuple[float, float]:
    """Share of windows that alarm, and the mean seconds per window (scores only)."""
    alarms, started = 0, time.perf_counter()
    key = f"{CLASS_TEST}/predicted"
    ref_cls = predict_classes(ref.embeddings[: ref.compare_rows], ref.centroids)
    for w in windows:
        tests = verdicts(score_window(ref, w, ref_cls, predict_classes(w, ref.centroids)), thresholds, key)
        alarms += any(t.drifted for t in tests)
    return alarms / len(windows), (time.perf_counter() - started) / len(windows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="trained model checkpoint (model.pt)")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--prefixes", default="8,64,512", help="nesting dims checked (the served funnel's)")
    ap.add_argument("--methods", default="mmd,model,distance,ratio")
    ap.add_argument("--windows", type=int, default=60, help="windows per scenario (>= 50 for the false-alarm rate)")
    ap.add_argument("--window-size", type=int, default=1000)
    ap.add_argument("--brightness", type=float, default=0.7, help="pixel scale of the darker images")
    ap.add_argument("--contrast", type=float, default=0.6, help="contrast factor of the low-contrast images")
    ap.add_argument("--rotation", type=float, default=15.0, help="degrees")
    ap.add_argument("--prior-share", type=float, default=0.5, help="window share of three favoured classes (0.3 unshifted)")
    ap.add_argument("--unseen-share", type=float, default=0.1, help="window share of the unseen class")
    ap.add_argument("--mild", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure milder shifts (pixels x 0.9, contrast x 0.85, +-5 deg, 40%% prior, 3%% unseen)")
    ap.add_argument("--out", default="bench/results/drift.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    prefixes = [int(d) for d in args.prefixes.split(",")]

    model = load_model(args.model)
    ds = read_fashion_mnist(args.data_dir)
    train, test = ds.subset("train"), ds.subset("test")
    classes = [str(c) for c in ds.classes]
    unseen = classes.index(UNSEEN)
    t0 = time.perf_counter()
    embed = lambda x, what: embed_items(model.encoder, x, 1024, f"embedding {what}")  # noqa: E731
    catalogue = embed(train.x, "catalogue (train split)")
    shifted_x = {
        f"darker (pixels x {args.brightness})": darker(test.x, args.brightness),
        f"lower contrast (x {args.contrast})": lower_contrast(test.x, args.contrast),
        f"rotated +-{args.rotation:g} deg": rotated(test.x, args.rotation, 0),
    }
    if args.mild:
        shifted_x |= {"mild: darker (pixels x 0.9)": darker(test.x, 0.9),
                      "mild: lower contrast (x 0.85)": lower_contrast(test.x, 0.85),
                      "mild: rotated +-5 deg": rotated(test.x, 5.0, 0)}
    clean = embed(test.x, "test split")
    shifted = {name: embed(x, name) for name, x in shifted_x.items()}
    embed_s = time.perf_counter() - t0

    rng = np.random.default_rng(1)
    n, w = args.windows, args.window_size
    sample = lambda pool: [pool[rng.choice(len(pool), w, replace=False)] for _ in range(n)]  # noqa: E731
    favoured = [0, 2, 4]
    scenarios = {name: sample(e) for name, e in shifted.items()}
    for share in [args.prior_share] + ([0.4] if args.mild else []):
        label = ("mild: " if share != args.prior_share else "") + f"class prior: 3 classes {share:.0%} of the window"
        scenarios[label] = [clean[prior_shift_rows(test.labels, favoured, share, w, rng)] for _ in range(n)]
    unchanged = sample(clean)
    seen_rows = np.flatnonzero(test.labels != unseen)
    unseen_rows = np.flatnonzero(test.labels == unseen)
    unseen_unchanged = [clean[rng.choice(seen_rows, w, replace=False)] for _ in range(n)]
    unseen_windows = {}
    for share in [args.unseen_share] + ([0.03] if args.mild else []):
        k = round(share * w)
        label = ("mild: " if share != args.unseen_share else "") + f"unseen class ({UNSEEN}) {share:.0%} of the window"
        unseen_windows[label] = [clean[np.concatenate([rng.choice(seen_rows, w - k, replace=False),
                                                       rng.choice(unseen_rows, k, replace=False)])] for _ in range(n)]

    rows, timings = [], []
    for method in args.methods.split(","):
        cfg = DriftConfig(method=method, window_size=w, prefixes=prefixes)
        meta = {"collection": "bench"}
        t = time.perf_counter()
        ref = build_reference(catalogue, train.labels, classes, prefixes, cfg, meta, log=lambda s: None)
        calibrate_s = time.perf_counter() - t
        fa, score_s = rate(ref, unchanged, ref.thresholds)
        detection = {name: rate(ref, windows, ref.thresholds)[0] for name, windows in scenarios.items()}
        seen = train.labels != unseen
        ref9 = build_reference(catalogue[seen], train.labels[seen], classes, prefixes, cfg, meta, log=lambda s: None)
        fa9, _ = rate(ref9, unseen_unchanged, ref9.thresholds)
        detection |= {name: rate(ref9, windows, ref9.thresholds)[0] for name, windows in unseen_windows.items()}
        big = clean[np.arange(10_000) % len(clean)]
        t = time.perf_counter()
        check_drift(ref, big, None, cfg, log=lambda s: None)
        check_s = time.perf_counter() - t
        rows.append((method, ref.thresholds, fa, fa9, detection))
        timings.append((method, calibrate_s, score_s, check_s))
        print(method, f"false alarms {fa:.3f} / {fa9:.3f}", {k: round(v, 3) for k, v in detection.items()},
              f"check {check_s:.1f} s", flush=True)

    write(args, rows, timings, prefixes, embed_s)


def write(args, rows, timings, prefixes, embed_s) -> None:
    def mark(value: float, ok: bool) -> str:
        return f"{value:.2f}" if ok else f"**{value:.2f}**"

    targets = [s for s in rows[0][4] if not s.startswith("mild: ")]
    mild = [s for s in rows[0][4] if s.startswith("mild: ")]
    lines = [
        "# Drift detection: calibration and detection rates",
        "",
        f"Measured by `bench/drift.py` on {platform.node() or 'this machine'} ({time.strftime('%Y-%m-%d')}, 2 CPU cores), "
        f"model `{args.model}`. Prefixes checked: {prefixes} (the funnel's). {args.windows} windows of "
        f"{args.window_size} rows per scenario; reference = the train split as promotion builds it "
        f"({DriftConfig().reference_size} compared rows, {DriftConfig().calibration_pool} held-back rows for "
        f"{DriftConfig().calibration_draws} calibration windows, false_alarm_rate {DriftConfig().false_alarm_rate} "
        "Bonferroni-split over the tests: one per prefix + the class-share test on nearest-centroid predictions).",
        "",
        "Windows are drawn from the test split, which calibration never sees. Targets: false alarms <= "
        f"{FALSE_ALARM_TARGET:.0%}, detection >= {DETECTION_TARGET:.0%} (misses in **bold**).",
        "",
        "| method | false alarms | false alarms (9-class ref) | " + " | ".join(targets) + " |",
        "|---" + "|---:" * (2 + len(targets)) + "|",
    ]
    for method, _, fa, fa9, detection in rows:
        cells = [mark(fa, fa <= FALSE_ALARM_TARGET), mark(fa9, fa9 <= FALSE_ALARM_TARGET)]
        cells += [mark(detection[s], detection[s] >= DETECTION_TARGET) for s in targets]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if mild:
        lines += ["", "## Milder shifts (no target: where detection starts to fail)", "",
                  "| method | " + " | ".join(s.removeprefix("mild: ") for s in mild) + " |",
                  "|---" + "|---:" * len(mild) + "|"]
        lines += [f"| {method} | " + " | ".join(f"{detection[s]:.2f}" for s in mild) + " |"
                  for method, _, _, _, detection in rows]
    lines += ["", f"## Thresholds (calibrated, {args.window_size}-row windows)", "",
              "| method | " + " | ".join(rows[0][1]) + " |", "|---" + "|---:" * len(rows[0][1]) + "|"]
    for method, thresholds, *_ in rows:
        lines.append(f"| {method} | " + " | ".join(f"{v:.4g}" for v in thresholds.values()) + " |")
    lines += ["", "Embedding tests alarm when the score is above the threshold; the class-share test when its "
              "chi-square p-value is below.", "",
              "## Time (2 cores)", "", "| method | calibrate at promotion (s) | scores per window (s) | "
              "full `mrl drift` check of a 10k x 512 window (s) |", "|---|---:|---:|---:|"]
    for method, calibrate_s, score_s, check_s in timings:
        lines.append(f"| {method} | {calibrate_s:.1f} | {score_s:.2f} | {check_s:.1f} |")
    lines += ["", f"Embedding the sets took {embed_s:.0f} s. A full check samples the window to "
              f"{args.window_size} rows, then runs the Evidently report (scores plus a t-SNE density plot of 500 rows "
              "per side for each prefix, most of its time) and writes HTML + JSON.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Great Expectations suites: pass on good data, fail closed on each kind of bad data."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import write_embeddings_table

from mrl.config import IngestConfig, ValidationConfig, VideoConfig
from mrl.data import Dataset, load_dataset
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.ingest import ingest
from mrl.validate import validate_dataset, validate_embeddings_table, validate_frames, validate_segments
from mrl.video.frames import Frames, save_frames
from mrl.video.scenes import Segments, save_segments

CFG = ValidationConfig(min_train_items=100, min_test_items=20, min_class_share=0.02, max_class_share=0.5)


@pytest.fixture
def dataset(fmnist_dir, tmp_path):
    return ingest("fashion_mnist", fmnist_dir, tmp_path / "ds.npz", IngestConfig()).path


def write_raw(ds: Dataset, path):
    """Write an artifact *without* the reader's checks: what a buggy upstream step could produce."""
    arrays = {"kind": np.array(ds.kind), "x": ds.x, "ids": ds.ids, "labels": ds.labels, "split": ds.split,
              "classes": ds.classes}
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def corrupt(dataset, tmp_path, **changes):
    ds = load_dataset(dataset)
    fields = {name: getattr(ds, name).copy() for name in ("x", "ids", "labels", "split", "classes")} | changes
    return write_raw(Dataset(ds.kind, **fields), tmp_path / "bad.npz")


def fails(path, match, tmp_path, cfg=CFG):
    out = tmp_path / "result.json"
    with pytest.raises(MRLError) as err:
        validate_dataset(path, cfg, out)
    assert match in str(err.value) and "\n" not in str(err.value)
    saved = json.loads(out.read_text())  # the full result is kept even though the step failed
    assert saved["success"] is False and saved["results"]


def test_good_dataset_passes_and_writes_the_result(dataset, tmp_path):
    report = validate_dataset(dataset, CFG, tmp_path / "result.json")
    assert report.success and report.evaluated >= 9
    assert json.loads((tmp_path / "result.json").read_text())["success"] is True


def test_duplicated_id(dataset, tmp_path):
    ids = load_dataset(dataset).ids.copy()
    ids[5] = ids[4]
    fails(corrupt(dataset, tmp_path, ids=ids), "items.expect_column_values_to_be_unique(id): 2 unexpected", tmp_path)


def test_unknown_label(dataset, tmp_path):
    labels = load_dataset(dataset).labels.copy()
    labels[:3] = 42
    fails(corrupt(dataset, tmp_path, labels=labels), "items.expect_column_values_to_be_in_set(label): 3 unexpected",
          tmp_path)


def test_unknown_split(dataset, tmp_path):
    split = load_dataset(dataset).split.astype(object)
    split[0] = "valid"
    fails(corrupt(dataset, tmp_path, split=split.astype(str)), "expect_column_values_to_be_in_set(split)", tmp_path)


def test_class_imbalance_and_small_splits(dataset, tmp_path):
    fails(dataset, "class_shares.expect_column_values_to_be_between(share)", tmp_path,
          ValidationConfig(min_class_share=0.3))
    fails(dataset, "splits.expect_column_values_to_be_between(test_items)", tmp_path,
          ValidationConfig(min_test_items=1000))


def test_declared_classes(dataset, tmp_path):
    with pytest.raises(MRLError, match="differ from validation.expected_classes"):
        validate_dataset(dataset, ValidationConfig(expected_classes=["cat", "dog"]))


def test_nan_vectors_in_a_vector_dataset(embeddings_table, tmp_path):
    vectors = ingest("embeddings", embeddings_table, tmp_path / "vec.npz", IngestConfig()).path
    x = load_dataset(vectors).x.copy()
    x[7, 3] = np.nan
    fails(corrupt(vectors, tmp_path, x=x), "items.expect_column_values_to_be_in_set(finite): 1 unexpected", tmp_path)


def table(tmp_path, vectors, ids=None, labels=None):
    return write_embeddings_table(tmp_path / "emb.parquet", vectors, ids=ids, labels=labels)


def table_fails(path, match, dim=3, cfg=CFG):
    with pytest.raises(MRLError) as err:
        validate_embeddings_table(path, cfg, dim)
    assert match in str(err.value)


def test_embeddings_table_suite(tmp_path):
    good = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    assert validate_embeddings_table(table(tmp_path, good), CFG, 3).success
    table_fails(table(tmp_path, good), "rows.expect_column_values_to_be_in_set(dim): 3 unexpected", dim=4)
    table_fails(table(tmp_path, [*good[:2], [1.0, 2.0]]), "(dim): 1 unexpected")
    table_fails(table(tmp_path, [*good[:2], [float("nan"), 0.0, 1.0]]), "(finite): 1 unexpected")
    table_fails(table(tmp_path, good, ids=["a", "b", "a"]), "expect_column_values_to_be_unique(id): 2 unexpected")
    table_fails(table(tmp_path, [*good[:2], [1e6, 0.0, 0.0]]), "expect_column_values_to_be_between(norm)")
    labeled = table(tmp_path, good, labels=["cat", "dog", "emu"])
    table_fails(labeled, "expect_column_values_to_be_in_set(label): 1 unexpected",
                cfg=ValidationConfig(expected_classes=["cat", "dog"]))


# --- video frames and segments: artifacts built directly (what a buggy upstream step could write) -----------------

FPS = 2.0


def good_frames() -> Frames:
    """a.mp4: 3.0 s, b.mp4: 2.1 s, sampled at 2 fps (b: 5 frames in 2.1 s, more than frames / duration allows)."""
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    pixels = np.random.default_rng(0).integers(0, 256, (len(times), 1, 4, 4)).astype(np.uint8)
    return Frames(np.array(["a.mp4"] * 6 + ["b.mp4"] * 5), np.array(times), pixels, np.array(["a.mp4", "b.mp4"]),
                  np.array([3.0, 2.1]), FPS)


def frames_with(tmp_path, **changes) -> Path:
    return save_frames(replace(good_frames(), **changes), tmp_path / "frames.npz")


def test_good_frames_pass(tmp_path):
    report = validate_frames(frames_with(tmp_path), VideoConfig(fps=FPS), tmp_path / "result.json")
    assert report.success and report.evaluated == 11
    assert json.loads((tmp_path / "result.json").read_text())["name"] == "frames"


def _shifted(times):
    t = np.array(times)
    t[6:9] = [1.0, 1.5, 2.0]
    return t


@pytest.mark.parametrize("changes, match", [
    ({"times": np.array([0.0, 0.5, 1.5, 1.0, 2.0, 2.5, 0.0, 0.5, 1.0, 1.5, 2.0])},
     "frames.expect_column_values_to_be_between(dt): 1 unexpected"),
    ({"videos": np.array(["a.mp4", "b.mp4", "c.mp4"]), "durations": np.array([3.0, 2.1, 1.0])},
     "videos.expect_column_values_to_be_between(frames): 1 unexpected"),  # an empty video
    ({"durations": np.array([3.0, 0.9])}, "videos.expect_column_values_to_be_between(overrun_s): 1 unexpected"),
    ({"times": np.r_[np.arange(6) * 0.5, np.arange(21) * 0.1], "video_ids": np.array(["a.mp4"] * 6 + ["b.mp4"] * 21),
      "pixels": np.zeros((27, 1, 4, 4), np.uint8)},  # b sampled at 10 fps
     "videos.expect_column_values_to_be_between(observed_fps): 1 unexpected"),
    ({"times": np.r_[np.arange(6) * 0.5, 0.0, 0.5, 1.0, 1.5, 2.0], "durations": np.array([6.0, 2.1])},  # a: gaps
     "videos.expect_column_values_to_be_between(observed_fps): 1 unexpected"),
    ({"times": _shifted(good_frames().times)}, "videos.expect_column_values_to_be_between(first_t): 1 unexpected"),
    ({"video_ids": np.array(["a.mp4"] * 3 + ["b.mp4"] * 5 + ["a.mp4"] * 3)},
     "videos.expect_column_values_to_be_in_set(runs): 1 unexpected"),
    ({"pixels": np.full((11, 1, 4, 4), 300, np.int16)}, "frames.expect_column_values_to_be_between(pixel_max)"),
], ids=["time-goes-back", "empty-video", "past-duration", "fps-too-high", "fps-too-low", "late-start",
        "not-contiguous", "pixels"])
def test_each_frames_violation_is_named(tmp_path, changes, match):
    out = tmp_path / "result.json"
    with pytest.raises(MRLError) as err:
        validate_frames(frames_with(tmp_path, **changes), VideoConfig(fps=FPS), out)
    assert match in str(err.value) and "\n" not in str(err.value) and "frames.npz" in str(err.value)
    assert json.loads(out.read_text())["success"] is False


def good_segments() -> Segments:
    """a.mp4: [0, 1.5) and [1.5, 3.0), b.mp4: [0, 2.1), over good_frames()' 11 frames."""
    f = good_frames()
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(3, 8)).astype(np.float32)
    frame_embeddings = rng.normal(size=(11, 8)).astype(np.float32)
    return Segments(np.array(["a.mp4:0", "a.mp4:1", "b.mp4:0"]), np.array(["a.mp4", "a.mp4", "b.mp4"]),
                    np.array([0.0, 1.5, 0.0]), np.array([1.5, 3.0, 2.1]),
                    embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True),
                    np.array([[0, 3], [3, 6], [6, 11]]), f.pixels[[0, 3, 6]], f.times,
                    frame_embeddings / np.linalg.norm(frame_embeddings, axis=1, keepdims=True), f.videos, f.durations,
                    {"model_name": "m", "model_version": "1", "nesting_dims": [4, 8], "fps": FPS})


def segments_with(tmp_path, **changes) -> Path:
    return save_segments(replace(good_segments(), **changes), tmp_path / "segments.npz")


def test_good_segments_pass(tmp_path):
    report = validate_segments(segments_with(tmp_path), tmp_path / "result.json")
    assert report.success and report.evaluated == 10


def _unnormalized():
    e = good_segments().embeddings.copy()
    e[1] *= 2
    return e


@pytest.mark.parametrize("changes, match", [
    ({"ids": np.array(["a.mp4:0", "a.mp4:0", "b.mp4:0"])}, "segments.expect_column_values_to_be_unique(id)"),
    ({"end_s": np.array([1.5, 1.5, 2.1]), "start_s": np.array([0.0, 1.5, 0.0])},
     "segments.expect_column_values_to_be_between(length_s): 1 unexpected"),
    ({"end_s": np.array([1.5, 3.5, 2.1])}, "segments.expect_column_values_to_be_between(overrun_s): 1 unexpected"),
    ({"start_s": np.array([-0.5, 1.5, 0.0])}, "segments.expect_column_values_to_be_between(start_s): 1 unexpected"),
    ({"embeddings": _unnormalized()}, "segments.expect_column_values_to_be_between(norm): 1 unexpected"),
    ({"frame_ranges": np.array([[0, 3], [3, 3], [6, 11]])},
     "segments.expect_column_values_to_be_between(frames): 1 unexpected"),
    ({"video_ids": np.array(["a.mp4", "a.mp4", "a.mp4"])},  # b.mp4 has no segment
     "videos.expect_column_values_to_be_between(segments): 1 unexpected"),
    ({"start_s": np.array([1.0, 1.5, 0.0])}, "videos.expect_column_values_to_be_between(first_start_s): 1 unexpected"),
    ({"video_ids": np.array(["a.mp4", "a.mp4", "x.mp4"])}, "segments.expect_column_values_to_be_in_set(video_id)"),
], ids=["duplicate-id", "empty-span", "past-duration", "negative-start", "not-normalized", "no-frames",
        "video-without-segments", "late-start", "undeclared-video"])
def test_each_segments_violation_is_named(tmp_path, changes, match):
    out = tmp_path / "result.json"
    with pytest.raises(MRLError) as err:
        validate_segments(segments_with(tmp_path, **changes), out)
    assert match in str(err.value) and "\n" not in str(err.value) and "segments.npz" in str(err.value)
    assert json.loads(out.read_text())["success"] is False


def test_validate_cli_takes_exactly_one_artifact(tmp_path):
    from typer.testing import CliRunner

    from mrl.cli import app

    frames, segments = frames_with(tmp_path), segments_with(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "--frames", str(frames), "--set", f"video.fps={FPS}"])
    assert ok.exit_code == 0 and "validation passed: 11 expectations" in ok.output
    assert runner.invoke(app, ["validate", "--segments", str(segments)]).exit_code == 0
    both = runner.invoke(app, ["validate", "--frames", str(frames), "--segments", str(segments)])
    assert both.exit_code == 2 and "exactly one of --data, --table, --frames, --segments" in both.output

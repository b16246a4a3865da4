"""Synthetic video corpora: ground truth that covers every video, and videos whose decoded content agrees with it."""

import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import write_fashion_mnist

from mrl.data.readers import FASHION_MNIST_CLASSES
from mrl.errors import MRLError
from mrl.video.synth import augmented_query, generate_corpus, load_ground_truth, load_test_split, main

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    """The real test split where the machine has it (real items make the content checks meaningful), else the
    synthetic idx files the other tests use."""
    if REAL_FMNIST.exists():
        return REAL_FMNIST
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), 10, 80)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fmnist) -> tuple[Path, dict]:
    """4 videos of about 8 s with 2-4 s scenes; video 3 is the continuous one (share 0.25)."""
    out = tmp_path_factory.mktemp("corpus")
    path = generate_corpus(out, 4, mean_video_s=8.0, fashion_mnist_dir=fmnist, seed=0, scene_s=(2.0, 4.0),
                           continuous_share=0.25, progress=False)
    return path, load_ground_truth(path)


def decode(path: Path) -> tuple[np.ndarray, list[float], float]:
    """Grayscale frames, their times and the container's duration in seconds."""
    with av.open(str(path)) as c:
        frames = [(f.to_ndarray(format="gray"), f.time) for f in c.decode(video=0)]
        duration = c.duration / 1e6
    return np.stack([f for f, _ in frames]).astype(np.float32), [t for _, t in frames], duration


def step_diffs(frames: np.ndarray) -> np.ndarray:
    """Mean absolute pixel difference between frame i and i+1."""
    return np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))


def test_ground_truth_covers_every_video_with_test_split_items(corpus, fmnist):
    path, truth = corpus
    _, labels = load_test_split(fmnist)
    assert truth["fps"] == 10 and truth["size"] == 64 and truth["seed"] == 0
    assert [v["kind"] for v in truth["videos"]] == ["scenes", "scenes", "scenes", "continuous"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["ground_truth.json"] + [f"v{i:05d}.mp4" for i in range(4)]
    for v in truth["videos"]:
        scenes, marks = v["scenes"], v["boundaries"]
        assert 8.0 * 0.5 < v["duration_s"] <= 8.0 * 1.4 + 1e-9 and v["frames"] == round(v["duration_s"] * 10)
        assert scenes[0]["start_s"] == 0 and scenes[-1]["end_s"] == v["duration_s"]
        assert all(a["end_s"] == b["start_s"] for a, b in itertools.pairwise(scenes))
        assert all(s["end_s"] > s["start_s"] for s in scenes)
        assert [m["t_s"] for m in marks] == [s["start_s"] for s in scenes[1:]]
        allowed = {"drift"} if v["kind"] == "continuous" else {"cut", "fade"}
        assert {m["transition"] for m in marks} <= allowed
        assert all(0.5 <= m["fade_s"] <= 1.0 for m in marks if m["transition"] == "fade")
        for s in scenes:
            assert s["item_id"] == f"fmnist-test-{s['item_index']:05d}"
            assert s["label"] == labels[s["item_index"]] and s["class"] == FASHION_MNIST_CLASSES[s["label"]]
        assert all(a["item_index"] != b["item_index"] for a, b in itertools.pairwise(scenes))
    assert len(truth["videos"][3]["scenes"]) >= 2  # the strip really moves from item to item


def test_decoded_video_matches_ground_truth(corpus):
    path, truth = corpus
    transitions = [m["transition"] for v in truth["videos"] for m in v["boundaries"]]
    assert "cut" in transitions and "fade" in transitions, "seed 0 gives both kinds"
    for v in truth["videos"][:3]:
        frames, times, duration = decode(path.parent / v["file"])
        assert len(frames) == v["frames"] and frames.shape[1:] == (64, 64)
        assert abs(duration - v["duration_s"]) <= 0.15
        assert np.allclose(times, np.arange(len(frames)) / 10, atol=1e-6)
        # Content: one step across a hard cut changes the picture more than any step inside a scene (the item moves,
        # zooms and brightens there, and noise differs every frame). Steps touching a fade are left out.
        diffs = step_diffs(frames)
        cuts = [round(m["t_s"] * 10) for m in v["boundaries"] if m["transition"] == "cut"]
        fading = {i for m in v["boundaries"] if m["transition"] == "fade"
                  for i in range(round((m["t_s"] - m["fade_s"]) * 10), round((m["t_s"] + m["fade_s"]) * 10) + 1)}
        inside = [d for i, d in enumerate(diffs) if i + 1 not in cuts and i not in fading and i + 1 not in fading]
        across = [diffs[c - 1] for c in cuts]
        assert not across or min(across) > 2 * max(inside), (v["file"], across, max(inside))


def spikes(diffs: np.ndarray) -> np.ndarray:
    """Each step's difference over the median of the 11 steps around it: a cut stands out, a pan does not."""
    return np.array([d / np.median(diffs[max(0, i - 5):i + 6]) for i, d in enumerate(diffs)])


def test_continuous_video_drifts_without_cuts(corpus):
    path, truth = corpus
    for v in truth["videos"]:
        frames, _, _ = decode(path.parent / v["file"])
        ratio = spikes(step_diffs(frames))
        if v["kind"] == "continuous":  # the picture changes all the time, but never at once
            assert ratio.max() < 1.8, (v["file"], ratio.max())
        else:
            assert all(ratio[round(m["t_s"] * 10) - 1] > 2.5 for m in v["boundaries"] if m["transition"] == "cut")


@pytest.mark.parametrize("suffix, codec", [(".mkv", "h264"), (".webm", "vp8"), (".webm", "vp9"), (".avi", "mpeg4"),
                                           (".mov", "h264")])
def test_other_containers_read_back(tmp_path, fmnist, suffix, codec):
    try:
        av.codec.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:
        pytest.skip(f"no {codec} encoder in this PyAV build")
    truth = load_ground_truth(generate_corpus(tmp_path, 1, mean_video_s=3.0, fashion_mnist_dir=fmnist, scene_s=(1.0, 2.0),
                                              suffix=suffix, codec=codec, progress=False))
    v = truth["videos"][0]
    assert v["file"] == f"v00000{suffix}"
    frames, _, duration = decode(tmp_path / v["file"])
    assert len(frames) == v["frames"] and abs(duration - v["duration_s"]) <= 0.15
    assert 0 < frames.mean() < 128  # an item on a dark canvas, not a blank or garbled picture


@pytest.mark.slow  # worker processes each encoding videos: seconds
def test_same_seed_same_corpus_any_worker_count(tmp_path, fmnist):
    def make(name: str, seed: int, workers: int = 1) -> dict:
        return json.loads(generate_corpus(tmp_path / name, 3, mean_video_s=4.0, fashion_mnist_dir=fmnist, seed=seed,
                                          scene_s=(1.0, 2.0), workers=workers, progress=False).read_text())

    first = make("a", 7)
    assert make("b", 7) == first
    assert make("c", 8) != first
    assert make("d", 7, workers=2) == first  # each video is seeded by (seed, index), not by the process that made it
    assert (tmp_path / "a" / "v00001.mp4").read_bytes() == (tmp_path / "d" / "v00001.mp4").read_bytes()


def test_augmented_query_is_a_different_view_of_the_item(fmnist):
    images, _ = load_test_split(fmnist)
    rng = np.random.default_rng(0)
    item, other = images[0], images[1]
    a, b = augmented_query(item, rng), augmented_query(item, rng)
    assert a.shape == (28, 28) and a.dtype == np.uint8
    assert not np.array_equal(a, item) and not np.array_equal(a, b)

    def corr(x, y):
        return np.corrcoef(x.ravel().astype(float), y.ravel().astype(float))[0, 1]

    assert corr(a, item) > 0.5 and corr(a, item) > corr(a, other)
    with pytest.raises(MRLError, match="2-D uint8"):
        augmented_query(item.astype(np.float32), rng)


def test_bad_input_is_one_line_error(tmp_path, fmnist):
    with pytest.raises(MRLError, match="'h264'"):
        generate_corpus(tmp_path / "w", 1, mean_video_s=2.0, fashion_mnist_dir=fmnist, suffix=".webm", progress=False)
    assert not list((tmp_path / "w").iterdir())  # no half-written video left behind
    with pytest.raises(MRLError, match="size"):
        generate_corpus(tmp_path, 1, fashion_mnist_dir=fmnist, size=63)
    with pytest.raises(MRLError, match="no such encoder"):
        generate_corpus(tmp_path, 1, fashion_mnist_dir=fmnist, codec="nope")
    with pytest.raises(MRLError, match="not found"):
        generate_corpus(tmp_path, 1, fashion_mnist_dir=tmp_path / "missing")
    with pytest.raises(MRLError, match="not found"):
        load_ground_truth(tmp_path / "nothing.json")


def test_main_reports_what_it_wrote(tmp_path, fmnist, capsys):
    main(["--out", str(tmp_path / "c"), "--videos", "2", "--mean-s", "3", "--fashion-mnist-dir", str(fmnist)])
    out = capsys.readouterr().out
    assert "wrote 2 videos" in out and "hours of video in" in out
    assert len(load_ground_truth(tmp_path / "c")["videos"]) == 2

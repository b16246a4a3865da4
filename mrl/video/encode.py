"""Writing frames as a video file with PyAV: grayscale frames, or YUV 4:2:0 planes, through a temporary name."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mrl.errors import MRLError

# Encoder settings per codec: fast presets (the benchmark writes 20+ hours on 2 cores) and one thread each (the
# pool, not the encoder, uses the cores). crf 28 on ultrafast keeps most of the pixel noise at ~0.3 MB per 72 s.
ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast", "crf": "28", "threads": "1"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "threads": "1"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "0", "threads": "1"},
    "libsvtav1": {"preset": "11"},  # its fastest; 12 is mapped to 11 with a warning
}
BIT_RATE = 400_000  # for encoders without a quality option set above (mpeg4, vp8, vp9)
# Full range grey -> limited ("TV") range luma, what decoders assume for untagged yuv420p.
_LUMA = np.round(16 + np.arange(256) * (219 / 255)).astype(np.uint8)


def _encoder(codec: str) -> av.codec.Codec:
    try:
        found = av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise MRLError(f"codec {codec!r}: no such encoder in this PyAV build") from None
    if found.type != "video":
        raise MRLError(f"codec {codec!r}: not a video encoder")
    return found


def write_video(path: str | Path, frames: np.ndarray, fps: int, codec: str = "h264") -> Path:
    """Write (T, H, W) uint8 grayscale frames (full range, 0 = black) as yuv420p through a temporary name: a crash
    never leaves half a video under the real name."""
    path = Path(path)
    _, h, w = frames.shape
    luma = np.take(_LUMA, np.asarray(frames, np.uint8))
    grey = np.full((h // 2, w // 2), 128, np.uint8)
    return write_yuv420(path, ((y, grey, grey) for y in luma), fps, codec, (w, h))


def write_yuv420(path: str | Path, planes, fps: int, codec: str, size: tuple[int, int],
                 bit_rate: int = BIT_RATE) -> Path:
    """Write frames given as an iterable of (Y (H, W), U (H/2, W/2), V (H/2, W/2)) uint8 planes, already in limited
    ("TV") range, through a temporary name. An iterable, not an array: long colour videos need not fit in memory.
    `bit_rate` (bits/s) applies to encoders without a quality option in ENCODER_OPTIONS."""
    path = Path(path)
    name = _encoder(codec).name
    w, h = size
    if h % 2 or w % 2:
        raise MRLError(f"{path}: frame size {w}x{h} must be even (yuv420p halves the chroma planes)")
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the suffix: PyAV picks the container by it
    try:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream(name, rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.codec_context.thread_count = 1
            if name in ENCODER_OPTIONS:
                stream.options = dict(ENCODER_OPTIONS[name])
            if name not in ("libx264", "libsvtav1"):
                stream.bit_rate = bit_rate
            # Filling the planes of a new frame costs a sixth of from_ndarray, which was a third of encoding. Planes
            # may be padded to an aligned line size, so each is written as (height, line_size).
            frame = av.VideoFrame(w, h, "yuv420p")
            padded = [np.zeros((p.height, p.line_size), np.uint8) for p in frame.planes]
            for i, values in enumerate(planes):
                frame = av.VideoFrame(w, h, "yuv420p")  # a fresh one each time: the encoder may hold the last
                for plane, buffer, value in zip(frame.planes, padded, values):
                    buffer[:, : value.shape[1]] = value
                    plane.update(buffer)
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except (av.FFmpegError, ValueError) as e:  # ValueError: PyAV's "format does not support codec", unknown suffix
        tmp.unlink(missing_ok=True)
        raise MRLError(f"{path}: cannot write {path.suffix} with codec {codec!r} ({e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

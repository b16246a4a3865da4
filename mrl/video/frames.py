"""Video ingest: sample frames from every video in a folder (PyAV; FFmpeg ships inside its wheel) into the frames
artifact, one .npz holding per frame: video id, time in seconds and pixels at the model's input size.

A video streams through the decoder and only the sampled, downscaled frames are kept (28x28 pixels at 2 fps: about
5 MB per hour of video), so a one-hour file never sits in memory whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from mrl.config import IngestConfig, VideoConfig
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.progress import progress

TRUNCATION_SLACK_S = 1.0  # a stream that ends earlier than its container's duration by more than this is truncated


@dataclass(frozen=True)
class Frames:
    """Sampled frames of a set of videos, in video order then time order."""

    video_ids: np.ndarray  # str (N,): the video's path relative to the ingested folder
    times: np.ndarray  # float64 (N,): seconds from the video's start
    pixels: np.ndarray  # uint8 (N, C, H, W)
    videos: np.ndarray  # str (V,): every video, in order
    durations: np.ndarray  # float64 (V,): each video's duration in seconds
    fps: float  # sampling rate
    skipped: list[str] = field(default_factory=list)  # "path: reason" of files left out (video.on_bad_file: skip)
    root: str = ""  # the ingested folder, absolute and resolved (video ids are relative to it); "": not recorded

    def __len__(self) -> int:
        return len(self.video_ids)

    def rows_of(self, video: str) -> np.ndarray:
        return np.flatnonzero(self.video_ids == video)


def check_frames(f: Frames, source: str) -> None:
    n = len(f.video_ids)
    if n == 0:
        raise MRLError(f"{source}: no frames")
    if len(f.times) != n or len(f.pixels) != n:
        raise MRLError(f"{source}: {len(f.times)} times and {len(f.pixels)} frames for {n} video ids")
    if len(f.durations) != len(f.videos):
        raise MRLError(f"{source}: {len(f.durations)} durations for {len(f.videos)} videos")
    unknown = sorted(set(np.unique(f.video_ids)) - set(f.videos))
    if unknown:
        raise MRLError(f"{source}: frames of undeclared videos {unknown[:3]}")


def save_frames(f: Frames, path: str | Path) -> Path:
    path = Path(path)
    check_frames(f, str(path))
    arrays = dict(kind=np.array("video_frames"), video_ids=f.video_ids.astype(str), times=f.times.astype(np.float64),
                  pixels=f.pixels, videos=f.videos.astype(str), durations=f.durations.astype(np.float64),
                  fps=np.array(f.fps), skipped=np.array(f.skipped, dtype=str), root=np.array(f.root))
    # Uncompressed: at a backbone's 224 px (RGB) zlib halves the file but took ~14 s per 15 minutes of video, more
    # than decoding it (~7 s); 28x28 frames stay small either way.
    atomic_write(path, lambda out: np.savez(out, **arrays))
    return path


def load_frames(path: str | Path, check: bool = True) -> Frames:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["kind"]) != "video_frames":
                raise MRLError(f"{path}: a {z['kind']} artifact, not video frames (from `mrl ingest --source video`)")
            f = Frames(z["video_ids"], z["times"], z["pixels"], z["videos"], z["durations"], float(z["fps"]),
                       [str(s) for s in z["skipped"]], str(z["root"]) if "root" in z else "")  # older: no root
    except FileNotFoundError:
        raise MRLError(f"{path}: frames file not found") from None
    except (OSError, ValueError, KeyError) as e:
        raise MRLError(f"{path}: not a video frames artifact ({e})") from None
    if check:
        check_frames(f, str(path))
    return f


def iter_frames(path: Path, fps: float, channels: int, size: int) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, uint8 (C, size, size)) every 1/fps seconds of `path`, decoded as a stream. MRLError naming
    the file if it cannot be opened, has no video stream, no frames, a decoding error or ends early (truncated)."""
    if path.stat().st_size == 0:
        raise MRLError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise MRLError(f"{path}: not a readable video ({_reason(e)})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise MRLError(f"{path}: no video stream (has {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg decodes with its own threads, outside the GIL
        step, next_t, last_t = 1.0 / fps, 0.0, None
        fmt = "gray" if channels == 1 else "rgb24"
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                last_t = frame.time
                if frame.time + 1e-6 < next_t:
                    continue
                yield frame.time, _model_frame(frame, fmt, size)
                while next_t <= frame.time + 1e-6:
                    next_t += step
        except av.error.FFmpegError as e:
            at = f" after {last_t:.1f}s" if last_t is not None else ""
            raise MRLError(f"{path}: corrupt video, decoding failed{at} ({_reason(e)})") from None
        declared = container.duration / 1e6 if container.duration else None
        if last_t is None:
            raise MRLError(f"{path}: truncated video (no decodable frame of {declared:.1f}s)" if declared
                           else f"{path}: empty video (no frames)")
        if declared is not None and last_t < declared - max(TRUNCATION_SLACK_S, 2 * step):
            raise MRLError(f"{path}: truncated video (frames end at {last_t:.1f}s of {declared:.1f}s)")


def _model_frame(frame, fmt: str, size: int) -> np.ndarray:
    """uint8 (C, size, size): the shorter side scaled to `size` by FFmpeg's scaler (area filter: a mean over the
    pixels each output pixel covers), then the centre crop, as images are prepared (mrl.data.images)."""
    scale = size / min(frame.width, frame.height)
    width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
    pixels = frame.reformat(width=width, height=height, format=fmt, interpolation="AREA").to_ndarray()
    top, left = (height - size) // 2, (width - size) // 2
    pixels = pixels[top:top + size, left:left + size]
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or type(e).__name__


def video_duration(path: Path, last_frame_t: float, fps: float) -> float:
    """The container's duration, else the last sampled frame's time plus one sampling step."""
    with av.open(str(path)) as container:
        if container.duration:
            return container.duration / 1e6
        stream = container.streams.video[0]
        rate = float(stream.average_rate or fps)
    return last_frame_t + 1.0 / rate


def find_videos(root: Path, extensions: list[str]) -> list[Path]:
    if not root.is_dir():
        raise MRLError(f"{root}: directory not found (expected video files: {', '.join(extensions)})")
    suffixes = {e.lower() for e in extensions}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise MRLError(f"{root}: no video files with suffix {', '.join(sorted(suffixes))}")
    return files


@dataclass(frozen=True)
class VideoIngestResult:
    path: Path
    videos: int
    frames: int
    hours: float
    seconds: float
    skipped: list[str]

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def ingest_videos(root: str | Path, output: str | Path, vcfg: VideoConfig, icfg: IngestConfig,
                  log: Callable[[str], None] = print) -> VideoIngestResult:
    """Every video under `root` (recursively) -> the frames artifact at `output`, written only once all are read.
    Bad files fail the ingest naming the file, or with video.on_bad_file=skip are listed (log and artifact)."""
    root = Path(root)
    files = find_videos(root, vcfg.extensions)
    channels = 1 if icfg.grayscale else 3
    video_ids, times, pixels, videos, durations, skipped = [], [], [], [], [], []
    started = time.perf_counter()
    bar = progress(None, "decoding videos", "frame", total=None, postfix={"videos": f"0/{len(files)}"})
    for n, path in enumerate(files, 1):
        video_id = str(path.relative_to(root))
        try:
            sampled = list(_tracked(iter_frames(path, vcfg.fps, channels, icfg.image_size), bar))
            duration = video_duration(path, sampled[-1][0], vcfg.fps)
        except MRLError as e:
            if vcfg.on_bad_file == "fail":
                bar.close()
                raise MRLError(f"{e} (video.on_bad_file=skip leaves such files out)") from None
            skipped.append(str(e))
            log(f"skipped {e}")
            continue
        videos.append(video_id)
        durations.append(duration)
        video_ids += [video_id] * len(sampled)
        times += [t for t, _ in sampled]
        pixels += [p for _, p in sampled]
        bar.set_postfix(videos=f"{n}/{len(files)}", refresh=False)
    bar.close()
    if not videos:
        raise MRLError(f"{root}: no readable videos ({len(skipped)} skipped: {skipped[0]})")
    frames = Frames(np.array(video_ids), np.array(times, dtype=np.float64), np.stack(pixels), np.array(videos),
                    np.array(durations, dtype=np.float64), vcfg.fps, skipped, str(root.resolve()))
    path = save_frames(frames, output)
    return VideoIngestResult(path, len(videos), len(frames), float(sum(durations)) / 3600,
                             time.perf_counter() - started, skipped)


def _tracked(frames: Iterator, bar) -> Iterator:
    for item in frames:
        bar.update(1)
        yield item

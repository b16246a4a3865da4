"""Real-photo video corpora with ground truth, for video moment search on real content (a sibling of synth.py).

The photographs come from Debian packages (scripts/get-photos.sh installs them). Each video is a sequence of
scenes; a scene films one photo as a handheld camera would: a crop window that pans and zooms across it, a few
pixels of shake, a brightness drift, sensor noise and sometimes a colour cast. Scenes are joined by hard cuts or
cross-fades (the fade's midpoint is the boundary). Videos vary in frame size (up to 640 px wide), frame rate
(12-30 fps) and codec (H.264 .mp4, VP9 .webm, MPEG-4 .avi).

Photos are split by *group* (near-duplicates such as a stereo pair share one), so no place is on both sides of the
train/benchmark split. Query stills are other crops of a photo, mirrored, colour-jittered and JPEG-compressed.

ground_truth.json has synth.py's schema: per video, contiguous spans covering [0, duration] with the photo shown
(item_id = photo id, item_index = its index in "photos", label = its group's index in "groups", class = group) and
the boundaries between spans. Boundaries fall on frame times. Per-video fps, size and codec are in each record.

    python -m mrl.video.photo_footage --out DIR --videos 20 --mean-s 40 --split bench --queries QDIR
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.progress import progress as progress_bar
from mrl.video.synth import (
    _GAUSS,
    FADE_S,
    FADE_SHARE,
    GROUND_TRUTH,
    _encoder,
    _frames_of,
    _scene_lengths,
    load_ground_truth,
    write_yuv420,
)

GRACE_HOPPER = "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"  # python-matplotlib-data
PHOTO_DIRS = (
    "/usr/share/backgrounds/mate/nature",  # mate-backgrounds
    "/usr/share/backgrounds/mate/abstract",
    "/usr/share/doc/opencv-doc/examples/data",  # opencv-doc
    "/usr/lib/python3/dist-packages/skimage/data",  # python3-skimage
    GRACE_HOPPER,  # a file: the rest of sample_data is charts and data
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
# Known sources: (id prefix, suffixes taken, names kept (None: all), names dropped). Any other directory: its name
# as the prefix and every image in it. The drops are not photographs (3-D renders, logos, text, a painting) or the
# same photo again at another resolution; skimage's own list is the real photographs among its test images.
SOURCES = {
    PHOTO_DIRS[0]: ("mate", (".jpg",), None, ()),
    PHOTO_DIRS[1]: ("mate", (".jpg",), None, ("Elephants_3840x2160", "Elephants_5640x3172")),
    PHOTO_DIRS[2]: ("opencv", (".jpg",), None, (
        "Blender_Suzanne1", "Blender_Suzanne2", "blox", "HappyFish", "LinuxLogo", "WindowsLogo", "ellipses",
        "starry_night", "text_defocus", "text_motion")),
    PHOTO_DIRS[3]: ("skimage", (".png", ".jpg"), (
        "astronaut", "brick", "camera", "cell", "chelsea", "clock_motion", "coffee", "coins", "grass", "gravel",
        "hubble_deep_field", "ihc", "moon", "motorcycle_left", "motorcycle_right", "retina", "rocket"), ()),
    GRACE_HOPPER: ("matplotlib", (".jpg",), None, ()),
}
MAX_SIDE = 1280  # px: photos are decoded once at most this large; footage is at most 640 wide
GET_PHOTOS = "scripts/get-photos.sh"


@dataclass(frozen=True)
class Photo:
    id: str  # "<source>/<file stem>", e.g. "opencv/left07"
    path: str
    group: str  # near-duplicates (a stereo pair, two views of one scene) share one; splits keep a group together


# --- photos -------------------------------------------------------------------------------------

def photo_group(prefix: str, stem: str) -> str:
    """The group of a photo: its stem without a view marker. left01..right14 -> "calibration" (one calibration
    series: the same person, room and chessboard in every shot), aloeL/aloeR -> "aloe",
    leuvenA/B -> "leuven", aero1/aero3 -> "aero", motorcycle_left/right -> "motorcycle", ela_original/modified
    -> "ela"; left/right (one stereo pair) -> "stereo". Only one trailing digit counts as a view number, so
    img_1234-style camera names stay apart."""
    m = re.fullmatch(r"(?:left|right)(\d*)", stem)
    if m:
        return f"{prefix}/calibration" if m.group(1) else f"{prefix}/stereo"
    for rule in (r"(.+)_(?:left|right|original|modified)", r"(.*[a-z])[LRAB]", r"(.*[a-z])\d"):
        m = re.fullmatch(rule, stem)
        if m:
            return f"{prefix}/{m.group(1)}"
    return f"{prefix}/{stem}"


def _candidates(entry: Path) -> list[tuple[str, Path]]:
    """(prefix, file) for the images an entry of the photo dirs names."""
    prefix, suffixes, keep, drop = SOURCES.get(str(entry), (entry.name or "photos", IMAGE_SUFFIXES, None, ()))
    files = [entry] if entry.is_file() else sorted(p for p in entry.iterdir() if p.is_file())
    return [(prefix, p) for p in files if p.suffix.lower() in suffixes and p.stem not in drop
            and (keep is None or p.stem in keep)]


def _big_enough(path: Path, min_side: int) -> bool:
    """Reads the header only; a file PIL cannot identify is not a photo."""
    try:
        with Image.open(path) as im:
            return min(im.size) >= min_side
    except (UnidentifiedImageError, OSError):
        return False


def find_photos(dirs=PHOTO_DIRS, min_side: int = 256) -> list[Photo]:
    """The photographs under `dirs` (directories or single files) whose shorter side is at least min_side px, sorted
    by id. With the default dirs a missing one is skipped (a machine may have some of the packages); a directory
    given explicitly must exist."""
    dirs = tuple(str(d) for d in dirs)
    photos: dict[str, Photo] = {}
    for entry in map(Path, dirs):
        if not entry.exists():
            if dirs != PHOTO_DIRS:
                raise MRLError(f"{entry}: photo directory not found")
            continue
        for prefix, path in _candidates(entry):
            if _big_enough(path, min_side):
                pid = f"{prefix}/{path.stem}"
                if pid in photos:
                    raise MRLError(f"{path}: photo id {pid} already taken by {photos[pid].path}")
                photos[pid] = Photo(pid, str(path), photo_group(prefix, path.stem))
    if not photos:
        raise MRLError(f"no photos of at least {min_side} px in {', '.join(dirs)}; {GET_PHOTOS} installs "
                       "Debian's photo packages")
    return [photos[k] for k in sorted(photos)]


def split_photos(photos: list[Photo], bench_share: float = 0.5, seed: int = 0) -> tuple[list[Photo], list[Photo]]:
    """(train, bench) with about bench_share of the photos in bench, whole groups on one side. Groups are taken in
    an order hashed from (seed, group), so the split depends on the seed and the groups alone, not on list order."""
    if not 0 <= bench_share <= 1:
        raise MRLError(f"bench_share: {bench_share}, need 0..1")
    groups: dict[str, list[Photo]] = {}
    for p in photos:
        groups.setdefault(p.group, []).append(p)
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    target, bench = bench_share * len(photos), set()
    for g in order:
        # Greedy: take a group when that brings the bench count closer to the target than leaving it.
        if len(bench) + len(groups[g]) / 2 <= target:
            bench.update(p.id for p in groups[g])
    return [p for p in photos if p.id not in bench], [p for p in photos if p.id in bench]


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB from any PIL mode: 16-bit and float are scaled to 8 bits, alpha is laid on mid-grey, palettes and CMYK
    are converted."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, np.float64)
        lo, hi = (0.0, 65535.0) if im.mode.startswith("I;16") else (float(a.min()), float(a.max()))
        im = Image.fromarray(np.clip((a - lo) * 255 / max(hi - lo, 1e-9), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        im = Image.alpha_composite(back, rgba)
    return im.convert("RGB")


@lru_cache(maxsize=4)  # ~3 MB each at 1280 px; _working keeps what the footage needs
def load_photo(path: str, max_side: int = MAX_SIDE) -> Image.Image:
    """A photo as an upright RGB image whose longer side is at most max_side px."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at a power-of-two reduction, still >= max_side
            im = ImageOps.exif_transpose(im)
            rgb = to_rgb(im)
    except (UnidentifiedImageError, OSError) as e:
        raise MRLError(f"{path}: cannot read the photo ({e})") from None
    rgb.thumbnail((max_side, max_side), Image.BILINEAR)
    return rgb


# --- footage ------------------------------------------------------------------------------------

SIZES = ((640, 360), (480, 270), (320, 180))  # px, 16:9; each video keeps one
FPS = (12, 15, 24, 25, 30)
CODECS = ("h264", "vp9", "mpeg4")
SUFFIX = {"h264": ".mp4", "vp9": ".webm", "mpeg4": ".avi"}  # a codec not listed goes in .mkv
SCENE_S = (3.0, 10.0)
ZOOM = (1.0, 3.0)  # crop = the largest frame-shaped window in the photo / zoom; log-uniform
WORK_SCALE = 1.5  # working photo: its largest window at most 1.5x the frame width (zoom 1 downsamples 1.5x at most)
SHAKE_PX = (0.5, 4.0)  # handheld shake amplitude, output px
GAIN = (0.7, 1.2)  # brightness: a scene ramps between two of these
CAST = 10.0  # colour cast: chroma offsets up to this many levels (of 224), in CAST_SHARE of the scenes
CAST_SHARE = 0.5
NOISE = (1.0, 4.0)  # sensor noise sigma, luma levels; chroma gets half
PAD = 32  # px of margin in a scene's noise bank: each frame takes the bank at a random offset
BITS_PER_PIXEL = 0.12  # VP9 / MPEG-4 bit rate per pixel and frame: ~370 kb/s at 480x270, 24 fps


@dataclass
class _Shot:
    """One scene, ready to render frame by frame: frames first..first+n-1 (a cross-fade's overlap included)."""
    first: int
    y: Image.Image  # working photo, luma plane (L)
    ycc: Image.Image  # working photo at half its size, YCbCr: the chroma planes come from it
    boxes: np.ndarray  # (n, 4) crop box per frame, working-photo px
    luts: np.ndarray  # (n, 3, 256) int16 Y/U/V lookup per frame: brightness, cast and limited range folded in
    weight: np.ndarray  # (n,) cross-fade weight
    noise_y: np.ndarray  # (H + PAD, W + PAD) int16
    noise_c: np.ndarray  # (H/2 + PAD/2, W/2 + PAD/2) int16


@lru_cache(maxsize=64)  # at most ~1.3 MB each (640 px frames): a worker decodes each photo once, not per scene
def _working(path: str, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """The photo at working resolution for frames of `size`, as luma (L) and, at half that size, YCbCr for the
    half-size chroma planes. A 480 px frame cropped from these costs a third of a crop from a 1280 px RGB photo
    (resizing time grows with the source pixels), and zoom 3 upsamples 2x at most."""
    im = load_photo(path)
    w, h = size
    base = min(im.width, im.height * w / h)
    scale = min(1.0, WORK_SCALE * w / base)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    ycc = im.convert("YCbCr")  # JPEG's full-range BT.601; the luts map it to limited range
    return ycc.getchannel(0), ycc.resize((max(1, ycc.width // 2), max(1, ycc.height // 2)), Image.BILINEAR)


def _camera(rng: np.random.Generator, f: np.ndarray, t_s: np.ndarray, photo: tuple[int, int],
            size: tuple[int, int]) -> np.ndarray:
    """(n, 4) crop boxes: a zoom between two levels and a pan through three points, eased over the scene (f = 0..1
    over its own span), plus shake. Boxes stay inside the photo."""
    (pw, ph), (w, h) = photo, size
    base_w = min(pw, ph * w / h)
    fc = np.clip(f, 0, 1)
    ease = fc * fc * (3 - 2 * fc)
    z0, z1 = np.exp(rng.uniform(np.log(ZOOM[0]), np.log(ZOOM[1]), 2))
    cw = base_w / (z0 + (z1 - z0) * ease)
    ch = cw * h / w
    px = np.interp(ease, [0, 0.5, 1], rng.uniform(0, 1, 3))  # window position, 0..1 of its free range
    py = np.interp(ease, [0, 0.5, 1], rng.uniform(0, 1, 3))
    shake = []
    for _ in range(2):  # two slow sways (0.3-3 Hz) and a per-frame jitter, in output px
        hz, phase = rng.uniform(0.3, 3.0, 2), rng.uniform(0, 2 * np.pi, 2)
        sway = np.sin(2 * np.pi * hz[0] * t_s + phase[0]) + 0.5 * np.sin(2 * np.pi * hz[1] * t_s + phase[1])
        shake.append(rng.uniform(*SHAKE_PX) * (sway / 1.5 + 0.3 * rng.standard_normal(len(f))))
    x0 = np.clip(px * (pw - cw) + shake[0] * cw / w, 0, pw - cw)
    y0 = np.clip(py * (ph - ch) + shake[1] * ch / h, 0, ph - ch)
    return np.stack([x0, y0, x0 + cw, y0 + ch], axis=1)


def _luts(rng: np.random.Generator, f: np.ndarray) -> np.ndarray:
    """(n, 3, 256) int16: full-range YCbCr -> limited-range YUV with this scene's brightness ramp (which scales the
    chroma too: a dimmer picture is less saturated) and colour cast."""
    g0, g1 = rng.uniform(*GAIN, 2)
    gain = (g0 + (g1 - g0) * np.clip(f, 0, 1))[:, None]
    black = rng.uniform(-6, 6)  # black level, luma levels
    cast = rng.uniform(-CAST, CAST, 2) if rng.random() < CAST_SHARE else np.zeros(2)
    v = np.arange(256, dtype=np.float64)[None]
    y = 16 + (219 / 255) * np.clip(gain * v + black, 0, 255)
    u, vv = (128 + (224 / 255) * gain * (v - 128) + c for c in cast)
    return np.clip(np.stack([y, u, vv], axis=1), 0, 255).round().astype(np.int16)


def _noise_bank(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    return np.take(_GAUSS * sigma, rng.integers(0, 256, shape, dtype=np.uint8)).round().astype(np.int16)


def _shot(rng: np.random.Generator, path: str, span: tuple[int, int], core: tuple[int, int], fades: tuple[int, int],
          fps: int, size: tuple[int, int]) -> _Shot:
    """Scene frames span=(first, last) whose own span is core=(start, end) frames; fades = (half-fade in frames at
    its start, at its end), 0 for a cut. Motion and ramps extend into a fade's overlap."""
    (first, last), (a, b), (w, h) = span, core, size
    frames = np.arange(first, last)
    f = (frames - a) / max(1, b - a - 1)
    y_img, ycc = _working(path, size)
    boxes = _camera(rng, f, frames / fps, y_img.size, size)
    weight = np.ones(last - first)
    t = frames + 0.5
    if fades[0]:  # fading in over [a - h, a + h): the weight crosses 0.5 at the boundary a
        weight = np.minimum(weight, (t - (a - fades[0])) / (2 * fades[0]))
    if fades[1]:
        weight = np.minimum(weight, ((b + fades[1]) - t) / (2 * fades[1]))
    sigma = rng.uniform(*NOISE)
    return _Shot(first, y_img, ycc, boxes, _luts(rng, f), weight.astype(np.float32),
                 _noise_bank(rng, (h + PAD, w + PAD), sigma), _noise_bank(rng, (h // 2 + PAD // 2, w // 2 + PAD // 2),
                                                                          sigma / 2))


def _render(shot: _Shot, t: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Clean (noise-free) int16 Y, U, V planes of frame t."""
    j = t - shot.first
    box = tuple(float(v) for v in shot.boxes[j])
    w, h = size
    y = np.asarray(shot.y.resize((w, h), Image.BILINEAR, box=box))
    half = (box[0] / 2, box[1] / 2, min(box[2] / 2, shot.ycc.width), min(box[3] / 2, shot.ycc.height))
    c = np.asarray(shot.ycc.resize((w // 2, h // 2), Image.BILINEAR, box=half))
    lut = shot.luts[j]
    return [np.take(lut[0], y), np.take(lut[1], c[..., 1]), np.take(lut[2], c[..., 2])]


def _frames(rng: np.random.Generator, shots: list[_Shot], total: int, size: tuple[int, int]):
    """Yield (Y, U, V) uint8 planes for frames 0..total-1: one scene, or two blended over a cross-fade, plus the
    leading scene's sensor noise taken at a random offset of its bank."""
    w, h = size
    for t in range(total):
        live = [s for s in shots if s.first <= t < s.first + len(s.weight)]
        if len(live) == 1:
            planes, lead = _render(live[0], t, size), live[0]
        else:
            weights = [float(s.weight[t - s.first]) for s in live]
            parts = [_render(s, t, size) for s in live]
            planes = [np.rint(sum(wt * p[i] for wt, p in zip(weights, parts))).astype(np.int16) for i in range(3)]
            lead = live[int(np.argmax(weights))]
        dy, dx = rng.integers(0, PAD + 1, 2)
        planes[0] += lead.noise_y[dy:dy + h, dx:dx + w]
        for p in planes[1:]:
            p += lead.noise_c[dy // 2:dy // 2 + h // 2, dx // 2:dx // 2 + w // 2]
        yield tuple(np.clip(p, 0, 255).astype(np.uint8) for p in planes)


def _pick_photos(rng: np.random.Generator, n: int, n_query: int, n_distract: int, share: float) -> np.ndarray:
    """A photo per scene (index into queries + distractors): a distractor with probability `share`, photos not yet
    in this video first, and never the same photo in two scenes in a row (a boundary must change the photo) unless
    there is only one photo."""
    items: list[int] = []
    everything = range(n_query + n_distract)
    for _ in range(n):
        pool = range(n_query, n_query + n_distract) if n_distract and rng.random() < share else range(n_query)
        last = items[-1] if items else -1
        allowed = [i for i in pool if i != last] or [i for i in everything if i != last] or list(pool)
        fresh = [i for i in allowed if i not in items] or allowed
        items.append(fresh[rng.integers(len(fresh))])
    return np.array(items, np.int64)


def _plan(rng: np.random.Generator, total: int, fps: int, n_query: int, n_distract: int, share: float,
          scene_s: tuple[float, float]) -> tuple[list[int], np.ndarray, list[int]]:
    """Scene lengths (frames), photo per scene (index into queries + distractors) and half-fade per inner boundary
    (frames, 0 = hard cut)."""
    lengths = _scene_lengths(rng, total, scene_s, fps)
    items = _pick_photos(rng, len(lengths), n_query, n_distract, share)
    halves = []
    for j in range(1, len(lengths)):  # a scene never fades away more than half of itself
        h = max(1, round(rng.uniform(*FADE_S) * fps / 2)) if rng.random() < FADE_SHARE else 0
        halves.append(min(h, lengths[j - 1] // 2, lengths[j] // 2))
    return lengths, items, halves


def make_photo_video(index: int, out_dir: str, pool: list[Photo], n_query: int, seed: int, mean_video_s: float,
                     size: tuple[int, int] | None, fps: tuple[int, ...], codecs: tuple[str, ...],
                     distractor_share: float, scene_s: tuple[float, float]) -> dict:
    """Render and write video `index` from pool = queries + distractors (the first n_query are queries); returns its
    ground-truth record. Seeded by (seed, index) alone, so any process can make any video."""
    rng = np.random.default_rng([seed, index])
    size = tuple(size) if size else SIZES[rng.integers(len(SIZES))]
    fps = int(rng.choice(fps))
    codec = codecs[index % len(codecs)]  # spread evenly whatever the count
    total = _frames_of(mean_video_s * rng.uniform(0.6, 1.4), fps)
    lengths, items, halves = _plan(rng, total, fps, n_query, len(pool) - n_query, distractor_share, scene_s)
    edges = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    before, after = [0, *halves], [*halves, 0]
    shots = [_shot(rng, pool[i].path, (edges[j] - before[j], edges[j + 1] + after[j]), (edges[j], edges[j + 1]),
                   (before[j], after[j]), fps, size) for j, i in enumerate(items)]
    name = f"v{index:05d}{SUFFIX.get(codec, '.mkv')}"
    bit_rate = max(200_000, int(BITS_PER_PIXEL * size[0] * size[1] * fps))
    write_yuv420(Path(out_dir) / name, _frames(rng, shots, total, size), fps, codec, size, bit_rate)
    groups = sorted({p.group for p in pool})
    scenes = [{"start_s": round(edges[j] / fps, 6), "end_s": round(edges[j + 1] / fps, 6), "item_id": pool[i].id,
               "item_index": int(i), "label": groups.index(pool[i].group), "class": pool[i].group,
               "distractor": bool(i >= n_query)} for j, i in enumerate(items)]
    marks = [{"t_s": round(edges[j] / fps, 6), "transition": "fade" if h else "cut",
              **({"fade_s": round(2 * h / fps, 6)} if h else {})} for j, h in enumerate(halves, start=1)]
    return {"file": name, "kind": "scenes", "duration_s": round(total / fps, 6), "frames": total, "fps": fps,
            "width": size[0], "height": size[1], "codec": codec, "scenes": scenes, "boundaries": marks}


def _make_in_worker(index: int, kwargs: dict) -> dict:
    return make_photo_video(index, **kwargs)


def _check(photos: list, distractors: list, n_videos: int, mean_video_s: float, size, fps: tuple[int, ...],
           codecs: tuple[str, ...], distractor_share: float, scene_s: tuple[float, float], workers: int) -> None:
    if not photos:
        raise MRLError("photos: none given")
    if {p.id for p in photos} & {p.id for p in distractors}:
        raise MRLError("distractors: some are also query photos")
    if n_videos < 1 or workers < 1:
        raise MRLError(f"n_videos: {n_videos}, workers: {workers}, need at least 1 each")
    if not mean_video_s > 0:
        raise MRLError(f"mean_video_s: {mean_video_s}, need > 0")
    if size and (len(size) != 2 or size[0] % 2 or size[1] % 2 or not 16 <= size[0] <= 640 or size[1] < 16):
        raise MRLError(f"size: {size}, need (width, height), even, 16..640 px wide (yuv420p halves chroma)")
    if not fps or any(int(f) != f or f < 1 for f in fps):
        raise MRLError(f"fps: {fps}, need whole numbers >= 1")
    if not codecs:
        raise MRLError("codecs: none given")
    for codec in codecs:
        _encoder(codec)  # fail before any work on a codec this build lacks
    if not 0 <= distractor_share <= 1 or (distractor_share > 0 and not distractors):
        raise MRLError(f"distractor_share: {distractor_share}, need 0..1 and a distractors list when > 0")
    if len(scene_s) != 2 or not 0 < scene_s[0] <= scene_s[1]:
        raise MRLError(f"scene_s: {scene_s}, need (min, max) seconds with 0 < min <= max")


def generate_photo_footage(out_dir: str | Path, photos: list[Photo], n_videos: int, mean_video_s: float = 40.0,
                           size: tuple[int, int] | None = None, fps: int | tuple[int, ...] = FPS, seed: int = 0,
                           workers: int = 2, codecs: tuple[str, ...] = CODECS, distractors: list[Photo] = (),
                           distractor_share: float = 0.0, scene_s: tuple[float, float] = SCENE_S,
                           progress: bool = True) -> dict:
    """Write videos v00000.<suffix>… and ground_truth.json into out_dir; returns the ground truth. size None picks
    one of SIZES per video, fps one of the choices given; durations vary 0.6x-1.4x around mean_video_s. A share
    `distractor_share` of the scenes shows `distractors` (photos that are not queries)."""
    fps = (int(fps),) if np.isscalar(fps) else tuple(int(f) for f in fps)
    codecs, scene_s, distractors = tuple(codecs), tuple(float(s) for s in scene_s), list(distractors)
    _check(photos, distractors, n_videos, mean_video_s, size, fps, codecs, distractor_share, scene_s, workers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool = [*photos, *distractors]
    kwargs = dict(out_dir=str(out), pool=pool, n_query=len(photos), seed=seed, mean_video_s=float(mean_video_s),
                  size=tuple(size) if size else None, fps=fps, codecs=codecs,
                  distractor_share=float(distractor_share), scene_s=scene_s)
    records: dict[int, dict] = {}
    bar = progress_bar(None, "videos", unit="video", total=n_videos, disable=not progress)
    if workers == 1:
        for i in range(n_videos):
            records[i] = make_photo_video(i, **kwargs)
            bar.update(1)
    else:
        # spawn: workers start clean whatever the caller has loaded (threads, torch); each loads photos as needed.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool_exec:
            futures = {pool_exec.submit(_make_in_worker, i, kwargs): i for i in range(n_videos)}
            for future in as_completed(futures):
                records[futures[future]] = future.result()
                bar.update(1)
    bar.close()
    truth = {"kind": "photo-footage", "fps": fps[0] if len(fps) == 1 else None, "size": list(size) if size else None,
             "seed": seed, "codec": list(codecs), "groups": sorted({p.group for p in pool}),
             "photos": [{"id": p.id, "group": p.group, "path": p.path, "distractor": i >= len(photos)}
                        for i, p in enumerate(pool)],
             "videos": [records[i] for i in range(n_videos)]}
    atomic_write(out / GROUND_TRUTH, lambda f: f.write(json.dumps(truth, indent=1).encode()))
    return truth


# --- queries ------------------------------------------------------------------------------------

def _query_jpeg(im: Image.Image, rng: np.random.Generator) -> bytes:
    """One query still as JPEG bytes: a crop of 50-90% of the photo's area (aspect jittered), 320-640 px on its
    longer side, maybe mirrored, colour-jittered, JPEG quality 30-90."""
    area, stretch = rng.uniform(0.5, 0.9), np.sqrt(rng.uniform(0.8, 1.25))
    cw = min(im.width, im.width * np.sqrt(area) * stretch)
    ch = min(im.height, im.width * im.height * area / cw)
    x0, y0 = rng.uniform(0, im.width - cw), rng.uniform(0, im.height - ch)
    longer = rng.uniform(320, 640)
    out = (max(1, round(cw * longer / max(cw, ch))), max(1, round(ch * longer / max(cw, ch))))
    view = im.resize(out, Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhance(view).enhance(rng.uniform(0.75, 1.25))
    hsv = np.asarray(view.convert("HSV")).copy()
    hsv[..., 0] += np.uint8(rng.integers(-8, 9) % 256)  # hue shift of up to ~11 degrees, wrapping around
    view = Image.fromarray(hsv, "HSV").convert("RGB")
    buffer = io.BytesIO()
    view.save(buffer, "JPEG", quality=int(rng.integers(30, 91)))
    return buffer.getvalue()


def query_jpegs(photo: Photo, n: int, seed: int = 0) -> list[bytes]:
    """n query stills of a photo as JPEG bytes; the same (photo id, seed) gives the same stills."""
    rng = np.random.default_rng([seed, zlib.crc32(photo.id.encode())])
    im = load_photo(photo.path)
    return [_query_jpeg(im, rng) for _ in range(n)]


def query_stills(photo: Photo, n: int, seed: int = 0) -> list[np.ndarray]:
    """n query stills of a photo, (H, W, 3) uint8 RGB, as decoded from their JPEGs."""
    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in query_jpegs(photo, n, seed)]


def write_queries(out_dir: str | Path, photos: list[Photo], per_photo: int, seed: int = 0) -> Path:
    """<photo id with / as _>__<n>.jpg per still and queries.json mapping file name -> photo id; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for photo in photos:
        for n, data in enumerate(query_jpegs(photo, per_photo, seed)):
            name = f"{photo.id.replace('/', '_')}__{n}.jpg"
            atomic_write(out / name, lambda f, d=data: f.write(d))
            mapping[name] = photo.id
    path = out / "queries.json"
    atomic_write(path, lambda f: f.write(json.dumps(mapping, indent=1).encode()))
    return path


# --- command line -------------------------------------------------------------------------------

def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: need WIDTHxHEIGHT, e.g. 480x270") from None
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mrl.video.photo_footage", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (videos + ground_truth.json)")
    p.add_argument("--videos", type=int, default=10)
    p.add_argument("--mean-s", type=float, default=40.0, help="mean video duration in seconds")
    p.add_argument("--split", choices=("bench", "train", "all"), default="bench", help="whose photos the videos show")
    p.add_argument("--bench-share", type=float, default=0.5, help="share of the photos (by group) in bench")
    p.add_argument("--distractor-share", type=float, default=0.0,
                   help="share of bench scenes showing train photos, which have no queries (bench only)")
    p.add_argument("--size", type=_size, default=None, help="WxH for every video (default: one of "
                   f"{', '.join(f'{w}x{h}' for w, h in SIZES)} per video)")
    p.add_argument("--fps", type=int, nargs="+", default=list(FPS), help="frame rates to choose from per video")
    p.add_argument("--codecs", nargs="+", default=list(CODECS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queries", help="also write query stills (JPEG) of the split's photos and queries.json here")
    p.add_argument("--queries-per-photo", type=int, default=3)
    p.add_argument("--photo-dirs", nargs="+", default=list(PHOTO_DIRS))
    return p


def _select(a: argparse.Namespace) -> tuple[list[Photo], list[Photo], int]:
    """(query photos, distractors, photos found) for the split asked for."""
    found = find_photos(a.photo_dirs)
    train, bench = split_photos(found, a.bench_share, a.seed)
    if a.distractor_share and a.split != "bench":
        raise MRLError("--distractor-share: bench only (train photos are the distractors; bench ones must not leak "
                       "into training footage)")
    photos = {"bench": bench, "train": train, "all": found}[a.split]
    if not photos:
        raise MRLError(f"--split {a.split}: no photos on that side (bench share {a.bench_share})")
    return photos, train if a.distractor_share else [], len(found)


def main(argv: list[str] | None = None) -> None:
    a = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        photos, distractors, n_found = _select(a)
        generate_photo_footage(a.out, photos, a.videos, a.mean_s, a.size, tuple(a.fps), a.seed, a.workers,
                                       tuple(a.codecs), distractors, a.distractor_share)
        queries = write_queries(a.queries, photos, a.queries_per_photo, a.seed) if a.queries else None
    except MRLError as e:
        raise SystemExit(f"error: {e}") from None
    took = time.perf_counter() - start
    out = Path(a.out)
    videos = load_ground_truth(out)["videos"]  # as a reader sees it
    seconds = sum(v["duration_s"] for v in videos)
    mb = sum((out / v["file"]).stat().st_size for v in videos) / 1e6
    shown = {s["item_id"] for v in videos for s in v["scenes"]}
    print(f"wrote {len(videos)} videos ({sum(len(v['scenes']) for v in videos)} spans, {mb:.1f} MB) and "
          f"{out / GROUND_TRUTH}")
    print(f"{seconds / 3600:.2f} hours of video in {took:.1f} s ({seconds / took:,.1f}x real time)")
    print(f"photos: {len(photos)} in split {a.split} of {n_found} found, {len(shown & {p.id for p in photos})} "
          f"shown; {len(shown & {p.id for p in distractors})} distractors shown")
    if queries:
        print(f"wrote {len(photos) * a.queries_per_photo} query stills and {queries}")


if __name__ == "__main__":
    main()

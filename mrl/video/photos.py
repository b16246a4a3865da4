"""The real photographs mrl.video.photo_footage films: found, split and loaded, and their query stills.

The photographs come from Debian packages (scripts/get-photos.sh installs them). Photos are split by *group*
(near-duplicates such as a stereo pair share one), so no place is on both sides of the train/benchmark split. Query
stills are other crops of a photo, mirrored, colour-jittered and JPEG-compressed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

from mrl.data.artifact import atomic_write
from mrl.errors import MRLError

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

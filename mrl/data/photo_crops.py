"""Training images for an image head from a few photographs: random crops of each photo, one class per photo (so
supervised objectives and the per-dim evaluation have labels; the instance objective ignores them).

    python -m mrl.data.photo_crops --out DIR --per-photo 40 [--split train]   # DIR/<photo>/<n>.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from mrl.data.augment import crop_box
from mrl.errors import MRLError
from mrl.video.photos import find_photos, load_photo, split_photos

AREA = (0.2, 0.8)  # share of the photo a crop covers: zoomed in 1.1-2.2x, as footage frames are
MAX_SIDE = 320  # px: crops are stored small; ingest resizes them to the model's input anyway


def random_crop(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    return im.crop(tuple(int(v) for v in crop_box(rng, im.width, im.height, AREA)))


def photo_crops(photos, per_photo: int, seed: int = 0):
    """(photo index, crop) pairs, `per_photo` random crops of each photo (mrl.video.photo_footage.Photo)."""
    rng = np.random.default_rng(seed)
    for i, photo in enumerate(photos):
        im = load_photo(photo.path)
        for _ in range(per_photo):
            yield i, random_crop(im, rng)


def write_photo_crops(out_dir: str | Path, photos, per_photo: int, seed: int = 0) -> int:
    """out_dir/<photo id, / as _>/<n>.jpg: an image folder for `mrl ingest --source image_folder`; returns the count."""
    out, n = Path(out_dir), 0
    for i, crop in photo_crops(photos, per_photo, seed):
        folder = out / photos[i].id.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        crop.thumbnail((MAX_SIDE, MAX_SIDE))
        crop.save(folder / f"{n:05d}.jpg", quality=92)
        n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mrl.data.photo_crops", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--per-photo", type=int, default=40)
    p.add_argument("--split", choices=("train", "bench", "all"), default="train", help="whose photos (split by group)")
    p.add_argument("--bench-share", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        found = find_photos()
        train, bench = split_photos(found, a.bench_share, a.seed)
        photos = {"train": train, "bench": bench, "all": found}[a.split]
        n = write_photo_crops(a.out, photos, a.per_photo, a.seed)
    except MRLError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {n} crops of {len(photos)} {a.split} photos to {a.out}")


if __name__ == "__main__":
    main()

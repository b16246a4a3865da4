"""Photo preprocessing (every mode to the model's channels, EXIF orientation, centre crop), footage-like views, and the
image folder's bad files: a one-line error, or skipped and listed with ingest.on_bad_file: skip."""

import io

import numpy as np
import pytest
from helpers import invoke, ok, one_line_error
from PIL import Image

from mrl.config import IngestConfig
from mrl.data import load_dataset
from mrl.data.augment import footage_view, footage_views
from mrl.data.images import model_pixels
from mrl.errors import MRLError
from mrl.ingest import ingest

RGB = IngestConfig(source="image_folder", image_size=32, grayscale=False)


def test_every_mode_becomes_rgb_at_the_model_size():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    sixteen = Image.fromarray((np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16))
    images = {"L": rgb.convert("L"), "P": rgb.convert("P"), "RGBA": rgb.convert("RGBA"), "CMYK": rgb.convert("CMYK"),
              "I;16": sixteen, "LA": rgb.convert("LA")}
    for mode, img in images.items():
        out = model_pixels(img, 3, 32)
        assert out.shape == (3, 32, 32) and out.dtype == np.uint8, mode
    # 16-bit is scaled to 0..255, not clipped to white
    grey = model_pixels(sixteen, 1, 32)
    assert grey.min() < 20 and grey.max() > 235 and 100 < grey.mean() < 155


def test_transparency_is_white_and_grayscale_has_one_channel():
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert model_pixels(clear, 3, 8).min() == 255
    assert model_pixels(clear, 1, 8).shape == (1, 8, 8)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display: the blue half ends up on top
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", exif=exif, quality=95)
    shown = model_pixels(Image.open(io.BytesIO(buffer.getvalue())), 3, 20)
    assert shown[2, :5].mean() > 200 and shown[0, :5].mean() < 60  # top rows blue
    assert shown[0, -5:].mean() > 200  # bottom rows red


def test_centre_crop_keeps_the_middle_of_a_wide_photo():
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # the middle third is white
    out = model_pixels(Image.fromarray(wide), 3, 20)
    assert out.min() > 200  # only the middle survives the crop


def test_footage_views_are_reproducible_and_differ():
    x = np.random.default_rng(1).integers(0, 255, (3, 3, 32, 32), dtype=np.uint8)
    views = footage_views(x, 2, seed=7)
    assert views.shape == (3, 2, 3, 32, 32) and views.dtype == np.uint8
    np.testing.assert_array_equal(views, footage_views(x, 2, seed=7))
    assert not np.array_equal(views[:, 0], views[:, 1])
    grey = footage_view(x[0, :1], np.random.default_rng(0))
    assert grey.shape == (1, 32, 32)


@pytest.fixture
def photo_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(2):
        folder = tmp_path / "photos" / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return tmp_path / "photos"


def test_image_folder_keeps_colour_at_the_size(photo_folder, tmp_path):
    r = ingest("image_folder", photo_folder, tmp_path / "ds.npz", RGB)
    assert r.item_shape == (3, 32, 32) and r.skipped == ()
    assert load_dataset(r.path).x.shape == (6, 3, 32, 32)


def test_corrupt_photo_fails_naming_it_or_is_skipped_and_listed(photo_folder, tmp_path):
    bad = photo_folder / "c1" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out" / "ds.npz"
    with pytest.raises(MRLError, match="broken.jpg: unreadable image") as err:
        ingest("image_folder", photo_folder, out, RGB)
    assert "\n" not in str(err.value) and not out.parent.exists()

    r = ingest("image_folder", photo_folder, out, RGB.model_copy(update={"on_bad_file": "skip"}))
    assert len(load_dataset(r.path)) == 6 and len(r.skipped) == 1 and "broken.jpg" in r.skipped[0]
    assert load_dataset(r.path).skipped == list(r.skipped)


def test_cli_lists_skipped_photos(photo_folder, tmp_path):
    (photo_folder / "c0" / "empty.png").write_bytes(b"")
    common = ["ingest", "--source", "image_folder", "--input", photo_folder, "--set", "ingest.image_size=32",
              "--set", "ingest.grayscale=false"]
    one_line_error(invoke(*common, "--output", tmp_path / "a.npz"), "empty.png", "on_bad_file")
    assert not (tmp_path / "a.npz").exists()
    lines = ok(invoke(*common, "--set", "ingest.on_bad_file=skip", "--output", tmp_path / "b.npz"))
    assert any("skipped 1 files" in line for line in lines) and any("empty.png" in line for line in lines)


def test_photo_crops_make_an_image_folder_one_class_per_photo(tmp_path):
    from mrl.config import load_config
    from mrl.data.photo_crops import write_photo_crops
    from mrl.video.photos import Photo

    rng = np.random.default_rng(0)
    photos = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
        photos.append(Photo(f"test/{name}", str(path), f"test/{name}"))
    assert write_photo_crops(tmp_path / "crops", photos, 3) == 6
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == ["test_a", "test_b"]
    sizes = {Image.open(p).size for p in (tmp_path / "crops").rglob("*.jpg")}
    assert len(sizes) > 1 and max(max(s) for s in sizes) <= 320  # random crops, stored small
    r = ingest("image_folder", tmp_path / "crops", tmp_path / "ds.npz", RGB)
    assert r.classes == ["test_a", "test_b"] and r.item_shape == (3, 32, 32)
    # the second demo's params file is valid and asks for what the demo needs
    cfg = load_config("scripts/photo-video-params.yaml")
    assert (cfg.model.backbone, cfg.ingest.image_size, cfg.ingest.grayscale) == ("efficientnet_lite0", 224, False)

"""Real-photo footage: photos found and split by group, videos whose decoded content agrees with the ground truth,
query stills. Synthetic photos stand in for the Debian ones, so nothing here needs them installed."""

import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from mrl.errors import MRLError
from mrl.video.photo_footage import generate_photo_footage, main
from mrl.video.photos import PHOTO_DIRS, Photo, find_photos, load_photo, query_stills, split_photos
from mrl.video.synth import load_ground_truth

# Dominant colours of the synthetic photos: far apart, so a frame's mean colour names the photo it shows.
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200), "grey": (128, 128, 128)}


def _photo(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A smooth random pattern around one colour: texture to pan over, one hue overall."""
    rng = np.random.default_rng(seed)
    blobs = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)
    a = 0.75 * np.array(colour, np.float32) + 0.25 * np.asarray(blobs, np.float32)
    return Image.fromarray(a.round().astype(np.uint8))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i, (name, colour) in enumerate(COLOURS.items()):
        _photo(colour, i).save(folder / f"{name}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo_dir) -> tuple[Path, dict, list[Photo]]:
    """2 videos of about 6 s (one H.264, one VP9), 160x90 at 12 fps, 2-3 s scenes; grey is the distractor."""
    photos = find_photos([photo_dir])
    grey = f"{photo_dir.name}/grey"  # a directory's own name prefixes its photos' ids
    queries, distractors = [p for p in photos if p.id != grey], [p for p in photos if p.id == grey]
    out = tmp_path_factory.mktemp("footage")
    truth = generate_photo_footage(out, queries, 2, mean_video_s=6.0, size=(160, 90), fps=12, seed=0, workers=1,
                                   codecs=("h264", "vp9"), distractors=distractors, distractor_share=0.3,
                                   scene_s=(2.0, 3.0), progress=False)
    return out, truth, photos


def test_split_puts_each_group_on_one_side_and_is_deterministic():
    photos = [Photo(f"s/{g}{v}", f"/x/{g}{v}.jpg", f"s/{g}") for g in "abcdefghij" for v in range(1 + ord(g) % 3)]
    for seed in range(10):
        train, bench = split_photos(photos, 0.5, seed)
        assert not {p.group for p in train} & {p.group for p in bench}
        assert sorted(p.id for p in train + bench) == sorted(p.id for p in photos)
        assert abs(len(bench) - len(photos) / 2) <= 2  # the largest group has 3 photos
        assert (train, bench) == split_photos(photos, 0.5, seed)
        assert {p.id for p in bench} == {p.id for p in split_photos(photos[::-1], 0.5, seed)[1]}
    assert split_photos(photos, 0.0)[1] == [] and split_photos(photos, 1.0)[0] == []


def test_find_photos_names_groups_and_reads_every_mode(tmp_path):
    base = _photo((90, 140, 200), 7)
    base.save(tmp_path / "left07.jpg")
    base.convert("L").save(tmp_path / "right07.jpg")
    base.convert("P").save(tmp_path / "aloeL.png")
    base.convert("RGBA").save(tmp_path / "aloeR.png")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257).save(tmp_path / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored image is turned 90 degrees
    _photo((200, 100, 50), 8, (320, 260)).save(tmp_path / "turned.jpg", exif=exif)
    _photo((1, 2, 3), 9, (100, 100)).save(tmp_path / "tiny.jpg")  # below min_side
    (tmp_path / "notes.txt").write_text("not a photo")
    photos = find_photos([tmp_path])
    name = tmp_path.name
    assert [p.id.split("/")[1] for p in photos] == ["aloeL", "aloeR", "cmyk", "deep", "left07", "right07", "turned"]
    groups = {p.id.split("/")[1]: p.group for p in photos}
    assert groups["left07"] == groups["right07"] == f"{name}/calibration"
    assert groups["aloeL"] == groups["aloeR"] == f"{name}/aloe"
    for p in photos:
        assert load_photo(p.path).mode == "RGB"
    assert load_photo(str(tmp_path / "turned.jpg")).size == (260, 320)
    deep = np.asarray(load_photo(str(tmp_path / "deep.png")), np.int16)[..., 0]  # 16-bit scaled down, not clipped
    assert np.abs(deep - np.asarray(base.convert("L"))).max() <= 1


def test_missing_or_empty_photo_dir_is_a_one_line_error(tmp_path):
    with pytest.raises(MRLError, match="not found") as e:
        find_photos([tmp_path / "nowhere"])
    assert "\n" not in str(e.value)
    with pytest.raises(MRLError, match="get-photos.sh") as e:
        find_photos([tmp_path])
    assert "\n" not in str(e.value)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_videos_decode_and_agree_with_the_ground_truth(corpus):
    out, truth, photos = corpus
    assert load_ground_truth(out) == truth
    by_id = {p.id: p for p in photos}
    shown = set()
    for video in truth["videos"]:
        frames = _decode(out / video["file"])
        fps = video["fps"]
        assert abs(len(frames) - video["duration_s"] * fps) <= 1 and len(frames) == video["frames"]
        assert frames[0].shape == (90, 160, 3)
        scenes = video["scenes"]
        assert scenes[0]["start_s"] == 0 and scenes[-1]["end_s"] == video["duration_s"]
        for s, t in itertools.pairwise(scenes):
            assert s["end_s"] == t["start_s"] and s["item_id"] != t["item_id"]
        assert [b["t_s"] for b in video["boundaries"]] == [s["start_s"] for s in scenes[1:]]
        for s in scenes:
            photo = by_id[s["item_id"]]
            assert s["class"] == photo.group == truth["groups"][s["label"]]
            assert s["distractor"] == photo.id.endswith("/grey")
            # The middle frame's mean colour is nearest the photo's colour.
            middle = frames[int((s["start_s"] + s["end_s"]) / 2 * fps)].reshape(-1, 3).mean(0)
            assert min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - middle).sum()) == photo.id.split("/")[1]
            shown.add(photo.id)
    assert len(shown) >= 3
    assert [v["codec"] for v in truth["videos"]] == ["h264", "vp9"]


def test_query_stills_are_distinct_rgb_crops(photo_dir):
    photo = find_photos([photo_dir])[0]
    stills = query_stills(photo, 4, seed=1)
    assert len(stills) == 4
    for s in stills:
        assert s.dtype == np.uint8 and s.ndim == 3 and s.shape[2] == 3 and 320 <= max(s.shape[:2]) <= 640
    for a in range(4):
        for b in range(a + 1, 4):
            assert stills[a].shape != stills[b].shape or np.abs(stills[a].astype(int) - stills[b]).mean() > 2
    assert all(np.array_equal(a, b) for a, b in zip(stills, query_stills(photo, 4, seed=1)))


def test_cli_writes_videos_ground_truth_and_queries(tmp_path, photo_dir, capsys):
    main(["--out", str(tmp_path / "v"), "--videos", "1", "--mean-s", "3", "--size", "160x90", "--fps", "12",
          "--split", "all", "--workers", "1", "--photo-dirs", str(photo_dir), "--queries", str(tmp_path / "q"),
          "--queries-per-photo", "2"])
    printed = capsys.readouterr().out
    assert "wrote 1 videos" in printed and "4 in split all of 4 found" in printed
    queries = json.loads((tmp_path / "q" / "queries.json").read_text())
    assert len(queries) == 8 and queries[f"{photo_dir.name}_red__1.jpg"] == f"{photo_dir.name}/red"
    assert all((tmp_path / "q" / f).is_file() for f in queries)
    assert (tmp_path / "v" / "v00000.mp4").is_file()
    with pytest.raises(SystemExit, match="error: .*nowhere"):
        main(["--out", str(tmp_path / "w"), "--photo-dirs", str(tmp_path / "nowhere")])


@pytest.mark.skipif(not Path(PHOTO_DIRS[2]).is_dir(), reason="Debian's photos are not installed")
def test_the_debian_photos_split_by_group():
    photos = find_photos()
    ids = {p.id: p for p in photos}
    assert len(photos) >= 60 and "opencv/sudoku" not in ids and "opencv/starry_night" not in ids
    assert ids["opencv/left07"].group == ids["opencv/right07"].group
    train, bench = split_photos(photos)
    assert not {p.group for p in train} & {p.group for p in bench}

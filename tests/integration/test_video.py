"""Video search end to end on real parts: PyAV-written videos, a tiny trained model in MLflow on sqlite, Milvus Lite,
and the FastAPI service."""

import base64
import io

import av
import mlflow
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mrl.config import load_config
from mrl.errors import MRLError
from mrl.retrieval import milvus_index as mi
from mrl.video.encode import write_video
from mrl.video.frames import ingest_videos, load_frames
from mrl.video.index import promote_segments
from mrl.video.scenes import build_segments, load_segments, segment_videos
from mrl.video.search import open_video_index
from mrl.video.synth import generate_corpus, load_ground_truth

PARAMS = ["model.nesting_dims=[4, 8, 16]", "model.embedding_dim=16", "model.cnn_widths=[8, 16, 16]",
          "train.batch_size=32", "train.epochs=1", "evaluate.recall_ks=[1]", "evaluate.probe_epochs=10",
          "retrieval.index_type=FLAT", "retrieval.target_recall=0.9", "retrieval.insert_batch=500"]


@pytest.fixture(scope="module")
def corpus(tiny_models, tmp_path_factory):
    """Four generated videos (scenes and continuous) from synthetic Fashion-MNIST-format items, the shared tiny model
    (seed 0) registered as champion in this module's store, the frames and segments artifacts."""
    tmp = tmp_path_factory.mktemp("video")
    raw = tiny_models.raw
    uri = tiny_models.register(tmp, seeds=[0])["uri"]
    cfg = load_config(None, PARAMS)
    mlflow.MlflowClient(uri).set_registered_model_alias(cfg.registry.model_name, "champion", "1")
    truth = load_ground_truth(generate_corpus(tmp / "videos", 4, mean_video_s=20, fashion_mnist_dir=raw, seed=1,
                                              continuous_share=0.25, progress=False))
    frames = ingest_videos(tmp / "videos", tmp / "frames.npz", cfg.video, cfg.ingest, log=lambda _: None).path
    segments = segment_videos(cfg, frames, tmp / "segments.npz", uri, log=lambda _: None).path
    return {"tmp": tmp, "uri": uri, "cfg": cfg, "truth": truth, "frames": frames, "segments": segments}


@pytest.fixture
def promoted(corpus, tmp_path):
    uri = str(tmp_path / "milvus.db")
    promote_segments(corpus["cfg"], corpus["segments"], uri, log=lambda _: None)
    client = mi.connect(uri)
    yield client, uri
    client.close()


@pytest.mark.slow  # the corpus: a registered model, generated videos, frames and segments
def test_ingest_samples_every_video_at_the_configured_rate(corpus):
    frames = load_frames(corpus["frames"])
    assert sorted(frames.videos) == sorted(v["file"] for v in corpus["truth"]["videos"])
    assert frames.pixels.shape[1:] == (1, 28, 28) and frames.pixels.dtype == np.uint8
    for video in corpus["truth"]["videos"]:
        rows = frames.rows_of(video["file"])
        times = frames.times[rows]
        assert np.all(np.diff(times) > 0) and times[0] == 0.0
        assert np.allclose(np.diff(times), 0.5, atol=0.06)  # 2 fps from 10 fps footage
        assert abs(len(rows) - video["duration_s"] * 2) <= 2
        duration = frames.durations[list(frames.videos).index(video["file"])]
        assert abs(duration - video["duration_s"]) < 0.2


@pytest.mark.parametrize("suffix,codec", [(".mkv", "h264"), (".webm", "libvpx"), (".avi", "mpeg4"), (".mov", "h264")])
def test_ingest_reads_each_container(tmp_path, suffix, codec):
    folder = tmp_path / "in"
    folder.mkdir()
    frames = np.zeros((30, 64, 64), dtype=np.uint8)
    frames[15:] = 200  # a hard cut at 1.5 s
    write_video(folder / f"clip{suffix}", frames, 10, codec)
    cfg = load_config(None)
    result = ingest_videos(folder, tmp_path / "frames.npz", cfg.video, cfg.ingest, log=lambda _: None)
    got = load_frames(result.path)
    assert result.videos == 1 and len(got) == 6
    assert got.pixels[:3].mean() < 30 and got.pixels[3:].mean() > 170  # the content, not just the count


def _bad_files(folder, good):
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.mkv").write_bytes(b"not a video at all" * 100)
    (folder / "truncated.mkv").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with av.open(str(folder / "audio_only.mp4"), "w") as c:
        stream = c.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode()]:
            c.mux(packet)


@pytest.mark.parametrize("name,reason", [("empty.mp4", "empty file"), ("garbage.mkv", "not a readable video"),
                                         ("truncated.mkv", "truncated video"), ("audio_only.mp4", "no video stream")])
def test_each_bad_file_fails_the_ingest_naming_it(tmp_path, name, reason):
    good = write_video(tmp_path / "good.mkv", np.full((100, 64, 64), 90, np.uint8), 10, "h264")
    _bad_files(tmp_path / "bad", good)
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / name).write_bytes((tmp_path / "bad" / name).read_bytes())
    cfg = load_config(None)
    with pytest.raises(MRLError, match=rf"{name}: {reason}"):
        ingest_videos(folder, tmp_path / "frames.npz", cfg.video, cfg.ingest, log=lambda _: None)
    assert not (tmp_path / "frames.npz").exists()


def test_skip_lists_bad_files_and_keeps_the_good_ones(tmp_path):
    good = write_video(tmp_path / "good.mkv", np.full((100, 64, 64), 90, np.uint8), 10, "h264")
    _bad_files(tmp_path / "in", good)
    (tmp_path / "in" / "good.mkv").write_bytes(good.read_bytes())
    cfg = load_config(None, ["video.on_bad_file=skip"])
    result = ingest_videos(tmp_path / "in", tmp_path / "frames.npz", cfg.video, cfg.ingest, log=lambda _: None)
    assert result.videos == 1 and len(result.skipped) == 4
    assert list(load_frames(result.path).skipped) == result.skipped  # in the artifact too, not only the log
    assert all(any(name in s for s in result.skipped) for name in ("empty.mp4", "garbage.mkv", "audio_only.mp4"))


def test_scene_cuts_fall_on_the_known_cuts(tmp_path):
    """Three scenes of distinct patterns, cut hard at 4 s and 7 s; embeddings = the decoded pixels themselves."""
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 255, (3, 64, 64)).astype(np.uint8)
    frames = np.concatenate([np.repeat(patterns[i][None], n, axis=0) for i, n in enumerate((40, 30, 50))])
    frames = np.clip(frames + rng.normal(0, 4, frames.shape), 0, 255).astype(np.uint8)  # not a still image
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "cuts.mp4", frames, 10, "h264")
    cfg = load_config(None, ["video.cut_threshold=0.9"])
    got = load_frames(ingest_videos(tmp_path / "in", tmp_path / "f.npz", cfg.video, cfg.ingest, log=lambda _: None).path)
    pixels = got.pixels.reshape(len(got), -1).astype(np.float32)
    embeddings = pixels - pixels.mean(axis=0)
    segments = build_segments(got, embeddings, cfg.video, 64, {"nesting_dims": [64, embeddings.shape[1]]})
    assert segments.start_s.tolist() == [0.0, 4.0, 7.0]
    assert segments.end_s.tolist() == [4.0, 7.0, 12.0]
    windows = build_segments(got, embeddings, cfg.video.model_copy(update={"segmenter": "windows"}), 64, {})
    assert windows.start_s.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0] and windows.end_s[-1] == 12.0


@pytest.mark.slow  # the corpus: a registered model, generated videos, frames and segments
def test_segments_cover_each_video_and_cut_near_the_truth(corpus):
    segments = load_segments(corpus["segments"])
    for video in corpus["truth"]["videos"]:
        mine = segments.video_ids == video["file"]
        starts, ends = segments.start_s[mine], segments.end_s[mine]
        assert starts[0] == 0.0 and abs(ends[-1] - video["duration_s"]) < 0.6
        assert np.allclose(starts[1:], ends[:-1])  # contiguous scenes
    assert np.allclose(np.linalg.norm(segments.embeddings, axis=1), 1.0, atol=1e-5)
    assert segments.thumbnails.shape[1:] == (1, 28, 28)


@pytest.mark.slow  # the corpus: a registered model, generated videos, frames and segments
def test_coarse_to_fine_search_finds_the_video_and_the_moment(corpus, tmp_path):
    """A frame as the query: its video first, its segment among the first hits, the best frame at its time. The
    search machinery is checked apart from the model (the tiny one barely tells these items apart): frames are
    embedded as a fixed random projection of their centred pixels, which keeps their distances."""
    from mrl.video.scenes import save_segments

    frames = load_frames(corpus["frames"])
    pixels = frames.pixels.reshape(len(frames), -1).astype(np.float32)
    embeddings = (pixels - pixels.mean(axis=0)) @ np.random.default_rng(0).normal(size=(pixels.shape[1], 64))
    meta = {"model_name": "pixels", "model_version": "0", "nesting_dims": [16, 32, 64]}
    segments = build_segments(frames, embeddings, corpus["cfg"].video, 16, meta)
    assert len(segments) > len(frames.videos)  # scenes were cut
    uri = str(tmp_path / "milvus.db")
    promote_segments(corpus["cfg"], save_segments(segments, tmp_path / "segments.npz"), uri, log=lambda _: None)
    index = open_video_index(corpus["cfg"], uri)
    for row in np.linspace(0, len(frames) - 1, 12).astype(int):
        video, t = frames.video_ids[row], frames.times[row]
        hits, timings = index.search(segments.frame_embeddings[row], 5)
        assert hits[0]["video_id"] == video
        mine = [h for h in hits[:3] if h["video_id"] == video and h["segment_start_s"] <= t < h["segment_end_s"]]
        assert mine and mine[0]["best_s"] == pytest.approx(t) and mine[0]["frame_score"] > 0.99  # float16 frames
        assert all(h["segment_start_s"] <= h["start_s"] <= h["best_s"] < h["end_s"] <= h["segment_end_s"] for h in hits)
        assert set(timings) >= {"refine_frames"}
    hits, _ = index.search(segments.embeddings[0], 10, per_video=True)
    assert len({h["video_id"] for h in hits}) == len(hits) == len(segments.videos)
    # video.frame_rerank: the best segments re-ranked by their best frame, so a frame query's own moment comes first
    cfg = corpus["cfg"]
    index.cfg = cfg.model_copy(update={"video": cfg.video.model_copy(update={"frame_rerank": 10})})
    for row in np.linspace(0, len(frames) - 1, 12).astype(int):
        hits, _ = index.search(segments.frame_embeddings[row], 3)
        assert len(hits) == 3 and hits[0]["best_s"] == pytest.approx(frames.times[row])
        assert hits[0]["video_id"] == frames.video_ids[row]
        assert [h["frame_score"] for h in hits] == sorted((h["frame_score"] for h in hits), reverse=True)
    index.client.close()


@pytest.mark.slow  # the corpus: a registered model, generated videos, frames and segments
def test_video_promotion_versions_verifies_and_rolls_back(corpus, promoted):
    from mrl.retrieval.lifecycle import rollback_index

    client, uri = promoted
    cfg = corpus["cfg"]
    second = promote_segments(cfg, corpus["segments"], uri, log=lambda _: None)
    assert (second.collection, second.previous) == ("videos_v2", "videos_v1") and second.verify_recall >= 0.9
    assert mi.alias_target(client, "videos") == "videos_v2" and "videos_v2_frames" in client.list_collections()
    assert rollback_index(cfg, uri, "videos") == ("videos_v2", "videos_v1")
    assert mi.alias_target(client, "videos") == "videos_v1"


@pytest.mark.slow  # the corpus: a registered model, generated videos, frames and segments
def test_a_failed_video_promotion_leaves_the_alias_and_drops_what_it_built(corpus, promoted, monkeypatch):
    from mrl.video import index as video_index

    client, uri = promoted
    monkeypatch.setattr(video_index, "insert_frames", lambda *a, **k: (_ for _ in ()).throw(MRLError("boom")))
    with pytest.raises(MRLError, match="boom"):
        promote_segments(corpus["cfg"], corpus["segments"], uri, log=lambda _: None)
    assert mi.alias_target(client, "videos") == "videos_v1"
    assert not {"videos_v2", "videos_v2_frames"} & set(client.list_collections())


def _png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow  # the corpus: a registered model, generated videos, frames and segments
def test_service_returns_moments_and_thumbnails(corpus, promoted, tmp_path):
    from mrl.service import create_app

    client, uri = promoted
    frames = load_frames(corpus["frames"])
    app = create_app(corpus["cfg"], uri, corpus["uri"], tmp_path / "qlog", client=client)
    with TestClient(app) as http:
        ready = http.get("/readyz").json()
        assert ready["videos"]["collection"] == "videos_v1" and "collection" not in ready  # no items index here
        row = len(frames) // 2
        response = http.post("/search", json={"image": _png(frames.pixels[row, 0]), "index": "videos", "k": 3})
        assert response.status_code == 200, response.text
        top = response.json()["results"][0]
        assert top["video_id"] == frames.video_ids[row]
        assert set(top) >= {"video_id", "start_s", "end_s", "best_s", "score", "thumbnail_url", "segment_id"}
        thumb = http.get(top["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(thumb.content)).size == (96, 96)
        clip = base64.b64encode((corpus["tmp"] / "videos" / frames.videos[0]).read_bytes()).decode()
        by_clip = http.post("/search", json={"clip": clip, "index": "videos", "k": 2}).json()["results"]
        assert by_clip[0]["video_id"] == frames.videos[0]
        by_id = http.post("/search", json={"id": top["segment_id"], "index": "videos", "k": 1}).json()["results"]
        assert by_id[0]["segment_id"] == top["segment_id"]
        for body, status, message in [
            ({"clip": clip}, 422, "clip: searches the videos"),
            ({"clip": base64.b64encode(b"junk" * 50).decode(), "index": "videos"}, 422, "clip: not a readable video"),
            ({"id": "nope:3", "index": "videos"}, 404, "unknown segment id"),
            ({"vector": [0.1] * 16}, 404, "no items index is served"),
        ]:
            response = http.post("/search", json=body)
            assert response.status_code == status and message in str(response.json()), response.text
            assert len(response.text) < 2000  # a rejected clip is not echoed back
        assert http.get("/thumbnails/nope:3").status_code == 404
    # Video queries have a query-log window of their own (flushed at shutdown), apart from the items' drift window.
    assert len(np.load(next((tmp_path / "qlog" / "videos").glob("queries-*.npy")))) == 2  # image and clip; not by id
    assert not list((tmp_path / "qlog").glob("queries-*.npy"))


def test_frames_record_the_ingested_folder_and_older_artifacts_still_load(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_video(folder / "clip.mp4", np.zeros((10, 32, 32), np.uint8), 10)
    cfg = load_config(None)
    path = ingest_videos(tmp_path / "." / "in", tmp_path / "frames.npz", cfg.video, cfg.ingest, log=lambda _: None).path
    assert load_frames(path).root == str(folder.resolve())
    with np.load(path) as z:  # an artifact written before the folder was recorded
        np.savez(tmp_path / "old.npz", **{k: z[k] for k in z.files if k != "root"})
    assert load_frames(tmp_path / "old.npz").root == ""


@pytest.fixture
def video_service(corpus, promoted, tmp_path, monkeypatch):
    """The service over the promoted corpus (model off), and the paths of every FileResponse it built."""
    from mrl.service import app as serve
    from mrl.service import create_app

    client, uri = promoted
    opened, real_file_response = [], serve.FileResponse

    def recording_file_response(path, *args, **kwargs):
        opened.append(path)
        return real_file_response(path, *args, **kwargs)

    monkeypatch.setattr(serve, "FileResponse", recording_file_response)

    def start(**kwargs):
        return TestClient(create_app(corpus["cfg"], uri, corpus["uri"], tmp_path / "qlog", load_model=False,
                                     client=client, reload_interval_s=0, **kwargs))
    return start, opened


@pytest.mark.slow  # the corpus: a registered model, generated videos, frames and segments
def test_videos_are_served_with_range_requests(corpus, video_service):
    start, opened = video_service
    frames = load_frames(corpus["frames"])
    assert frames.root == str((corpus["tmp"] / "videos").resolve())
    assert load_segments(corpus["segments"]).meta["video_root"] == frames.root
    video = str(frames.videos[1])
    data = (corpus["tmp"] / "videos" / video).read_bytes()
    with start() as http:
        assert http.get("/readyz").json()["videos"]["player"] is True
        full = http.get(f"/videos/{video}")
        assert full.status_code == 200 and full.content == data
        assert full.headers["content-type"] == "video/mp4" and full.headers["accept-ranges"] == "bytes"
        assert int(full.headers["content-length"]) == len(data)
        part = http.get(f"/videos/{video}", headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == data[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}" and part.headers["content-length"] == "1000"
        tail = http.get(f"/videos/{video}", headers={"Range": "bytes=-500"})  # a suffix range: the last 500 bytes
        assert tail.status_code == 206 and tail.content == data[-500:]
        assert tail.headers["content-range"] == f"bytes {len(data) - 500}-{len(data) - 1}/{len(data)}"
        rest = http.get(f"/videos/{video}", headers={"Range": f"bytes={len(data) - 10}-"})  # what a player asks
        assert rest.status_code == 206 and rest.content == data[-10:]
        past = http.get(f"/videos/{video}", headers={"Range": f"bytes={len(data)}-{len(data) + 10}"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
        head = http.head(f"/videos/{video}")
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(data)
    assert len(opened) == 6 and all(p == (corpus["tmp"] / "videos" / video).resolve() for p in opened)


@pytest.mark.slow  # the corpus: a registered model, generated videos, frames and segments
def test_videos_outside_the_indexed_folder_or_not_indexed_are_404(corpus, video_service, tmp_path):
    import shutil
    from urllib.parse import quote

    start, opened = video_service
    frames = load_frames(corpus["frames"])
    # A copy of the folder (served with videos_dir) where one indexed video is a symlink to a file outside it.
    folder = tmp_path / "served"
    shutil.copytree(corpus["tmp"] / "videos", folder)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"SECRET outside the video folder")
    symlinked = str(frames.videos[0])
    (folder / symlinked).unlink()
    (folder / symlinked).symlink_to(secret)
    inside = folder / "inner.mp4"  # a symlink that stays inside the folder is followed (for an indexed id only)
    inside.symlink_to(folder / str(frames.videos[2]))
    with start(videos_dir=folder) as http:
        good = http.get(f"/videos/{frames.videos[1]}")
        assert good.status_code == 200 and good.content == (folder / str(frames.videos[1])).read_bytes()
        opened.clear()
        for path, message in [
            (f"/videos/{symlinked}", "leads outside the video folder"),  # an indexed id, but a symlink out
            ("/videos/..%2F..%2Fetc%2Fpasswd", "unknown video id"),
            ("/videos/..%2Fsecret.mp4", "unknown video id"),
            ("/videos/%2Fetc%2Fpasswd", "unknown video id"),  # absolute
            ("/videos/" + quote(str(folder / str(frames.videos[1])), safe=""), "unknown video id"),  # absolute, inside
            ("/videos/ground_truth.json", "unknown video id"),  # in the folder, but not an indexed video
            ("/videos/inner.mp4", "unknown video id"),
            ("/videos/nope.mp4", "unknown video id"),
        ]:
            response = http.get(path, headers={"Range": "bytes=0-99"})
            assert response.status_code == 404, (path, response.status_code)
            assert response.headers["content-type"] == "application/json" and "\n" not in response.text
            assert message in response.json()["detail"] and b"SECRET" not in response.content, response.text
        assert opened == []  # no file was opened for any of them
    assert (corpus["tmp"] / "videos" / symlinked).is_file() and not (corpus["tmp"] / "videos" / symlinked).is_symlink()


def test_resolve_inside_refuses_every_way_out(tmp_path):
    from mrl.video.search import resolve_inside

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"a")
    (tmp_path / "out.mp4").write_bytes(b"out")
    (root / "link-out.mp4").symlink_to(tmp_path / "out.mp4")
    (root / "dir-out").symlink_to(tmp_path)
    (root / "link-in.mp4").symlink_to(root / "sub" / "a.mp4")
    assert resolve_inside(root, "sub/a.mp4") == (root / "sub" / "a.mp4").resolve()
    assert resolve_inside(root, "link-in.mp4") == (root / "sub" / "a.mp4").resolve()
    for bad in ["../out.mp4", "sub/../../out.mp4", "sub/../a.mp4", str(tmp_path / "out.mp4"), "/etc/passwd",
                "link-out.mp4", "dir-out/out.mp4", "sub", "", ".", "sub/missing.mp4", "..\\out.mp4", "a\0b"]:
        with pytest.raises(MRLError):
            resolve_inside(root, bad)

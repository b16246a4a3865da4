"""The search page at / in a real browser: Debian's chromium driven by Selenium through chromedriver, against the
service on a real port over a promoted tiny index. `make test` installs chromium and chromium-driver when missing
(scripts/get-chromium.sh); without them this test skips, or fails where MRL_REQUIRE_BROWSER=1 (CI)."""

import base64
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import SERVICE_PARAMS
from PIL import Image

from mrl.config import load_config
from mrl.data import load_dataset
from mrl.promote import promote_index
from mrl.retrieval import milvus_index as mi

pytestmark = pytest.mark.slow  # a browser, uvicorn and a promoted index

CHROMIUM = shutil.which("chromium") or shutil.which("google-chrome")  # Debian; GitHub's Ubuntu runners
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("MRL_REQUIRE_BROWSER") == "1":
        raise RuntimeError("MRL_REQUIRE_BROWSER=1 but chromium/chromedriver are missing: run scripts/get-chromium.sh")
    pytest.skip("chromium and chromedriver not installed (scripts/get-chromium.sh installs them)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    """`mrl serve`'s app under uvicorn on a free port, over a promoted index of a tiny model (memory backend)."""
    import uvicorn
    from mlflow import MlflowClient

    from mrl.service import create_app

    tmp = tmp_path_factory.mktemp("page")
    setup = tiny_models.register(tmp, seeds=[0])
    cfg = load_config(None, [*SERVICE_PARAMS, "retrieval.serve_backend=memory"])
    MlflowClient(setup["uri"]).set_registered_model_alias(cfg.registry.model_name, "champion", "1")
    client = mi.connect(str(tmp / "milvus.db"))
    promote_index(cfg, setup["data"], setup["uri"], str(tmp / "milvus.db"), log=lambda _: None)
    app = create_app(cfg, str(tmp / "milvus.db"), setup["uri"], tmp / "qlog", client=client)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", setup
    uv.should_exit = True
    thread.join(timeout=10)
    client.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout: float = 30.0, poll: float = 0.5):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=poll).until(lambda d: condition(d))


def hit_ids(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#results .hit')].map(h => h.dataset.id)")


def test_search_by_image_shows_the_apis_results_with_thumbnails_and_the_explorer_works(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, setup = server
    ds = load_dataset(setup["data"])
    row = int(np.flatnonzero(ds.ids == "fmnist-test-00003")[0])
    query = tmp_path / "query.png"
    Image.fromarray(ds.x[row, 0]).save(query)

    browser.get(url + "/")
    wait_for(browser, lambda d: "items_v1" in d.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "file").send_keys(str(query))
    wait_for(browser, lambda d: len(hit_ids(d)) == 10)
    shown = hit_ids(browser)

    # The page shows what the API answers for the same image (the served funnel, plus exact for the explorer).
    body = {"image": base64.b64encode(query.read_bytes()).decode(), "k": 10, "index": "items", "exact": True}
    api = httpx.post(url + "/search", json=body, timeout=30).json()
    assert shown == [h["id"] for h in api["results"]]
    assert shown[0] == "fmnist-test-00003"
    labels = browser.execute_script("return [...document.querySelectorAll('#results .hit .label')].map(e => e.textContent)")
    assert labels == [h["label"] for h in api["results"]]
    wait_for(browser, lambda d: d.execute_script(
        "return [...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth === 28)"))
    assert "shortlist_d" in browser.find_element(By.ID, "timings").text
    assert "recall@10 vs exact" in browser.find_element(By.ID, "recall").text

    # Explorer: a full-dim shortlist is exact search, so recall is 1.00 and no result is marked as a miss.
    Select(browser.find_element(By.ID, "d0")).select_by_value("16")
    wait_for(browser, lambda d: "16@" in d.find_element(By.ID, "summary").text)
    assert browser.find_element(By.ID, "recall").text.endswith("1.00")
    assert not browser.find_elements(By.CSS_SELECTOR, "#results .hit.miss")

    # A click on a result searches by its id: the item comes back first.
    card = browser.find_elements(By.CSS_SELECTOR, "#results .hit")[3]
    clicked = card.get_attribute("data-id")
    card.click()
    wait_for(browser, lambda d: hit_ids(d)[:1] == [clicked])
    assert browser.find_element(By.ID, "by-id").get_attribute("value") == clicked

    # A bad id shows the API's message on the page.
    box = browser.find_element(By.ID, "by-id")
    box.clear()
    box.send_keys("no-such-item")
    browser.find_element(By.ID, "by-id-go").click()
    wait_for(browser, lambda d: "unknown item id 'no-such-item'" in d.find_element(By.ID, "error").text)

    shots = os.environ.get("MRL_SCREENSHOT_DIR")  # docs/img/search-page.png is taken this way (see README)
    if shots:
        browser.get(url + "/")
        wait_for(browser, lambda d: "items_v1" in d.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "file").send_keys(str(query))
        wait_for(browser, lambda d: len(hit_ids(d)) == 10)
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(shots) / "search-page.png"))


def test_api_docs_render_without_internet(server, browser):
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/docs")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/search", "/items/{item_id}/thumbnail", "/readyz", "/videos/{video_id}"} <= paths
    browser.get(url + "/redoc")
    wait_for(browser, lambda d: "mrl search" in d.find_element(By.TAG_NAME, "body").text and
             d.find_elements(By.CSS_SELECTOR, "[data-section-id]"))


def serve_in_thread(app):
    """`app` under uvicorn on a free port in a daemon thread: (base URL, server)."""
    import uvicorn

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=uv.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert uv.started, "uvicorn did not start"
    return f"http://127.0.0.1:{port}", uv


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    """A text adapter promoted over the tiny text table (helpers.TEXT_WORDS) through the CLI, served."""
    from helpers import TEXT_PARAMS, write_text_table
    from typer.testing import CliRunner

    from mrl.cli import app as cli
    from mrl.service import create_app

    tmp = tmp_path_factory.mktemp("text-page")
    uri, milvus = f"sqlite:///{tmp / 'mlflow.db'}", str(tmp / "milvus.db")
    params = [*TEXT_PARAMS, f"text.cache_dir={tmp / 'cache'}", f"drift.reference_dir={tmp / 'refs'}"]
    sets = [a for p in params for a in ("--set", p)]
    data, model = tmp / "text.npz", tmp / "adapter.pt"
    for args in (["ingest", "--source", "text", "--input", write_text_table(tmp / "t.jsonl"), "--output", data],
                 ["train", "--data", data, "--out", model],
                 ["evaluate", "--model", model, "--data", data, "--metrics-out", tmp / "m.json"],
                 ["model", "register", "--model", model, "--metrics", tmp / "m.json", "--gate", "--tracking-uri", uri],
                 ["index", "promote", "--data", data, "--tracking-uri", uri, "--milvus-uri", milvus]):
        done = CliRunner().invoke(cli, [str(a) for a in [*args, *sets]])
        assert done.exit_code == 0, done.output
    url, uv = serve_in_thread(create_app(load_config(None, params), milvus, uri, tmp / "qlog"))
    yield url
    uv.should_exit = True


def test_a_text_index_gets_a_text_box_and_shows_the_apis_documents(text_server, browser):
    from selenium.webdriver.common.by import By

    browser.get(text_server + "/")
    wait_for(browser, lambda d: "items_v1" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "text-query").is_displayed()
    assert not browser.find_element(By.ID, "drop").is_displayed()  # no image drop for a text adapter
    query = "a musical instrument with hammers and strings"
    browser.find_element(By.ID, "text").send_keys(query)
    browser.find_element(By.ID, "text-go").click()
    wait_for(browser, lambda d: "results from items_v1" in d.find_element(By.ID, "summary").text)
    api = httpx.post(text_server + "/search", json={"text": query, "k": 10, "index": "items"}, timeout=30).json()
    assert hit_ids(browser) == [h["id"] for h in api["results"]] and len(api["results"]) >= 3
    labels = browser.execute_script("return [...document.querySelectorAll('#results .hit .label')].map(e => e.textContent)")
    assert labels == [h["text"] for h in api["results"]]  # each document's text, not a thumbnail
    assert browser.execute_script("return document.querySelectorAll('#results .hit img').length") == 0


@pytest.fixture(scope="module")
def video_server(tiny_models, browser, tmp_path_factory):
    """A video index served alone: three generated videos (H.264 MP4, as the demo corpus, where this browser plays it;
    else VP9 WebM), the tiny model (seed 0) as champion, 3-second windows as segments, promoted to Milvus Lite."""
    from mlflow import MlflowClient

    from mrl.service import create_app
    from mrl.video.frames import ingest_videos
    from mrl.video.index import promote_segments
    from mrl.video.scenes import segment_videos
    from mrl.video.synth import generate_corpus

    tmp = tmp_path_factory.mktemp("video-page")
    setup = tiny_models.register(tmp, seeds=[0])
    cfg = load_config(None, [*SERVICE_PARAMS, "retrieval.serve_backend=memory", "video.segmenter=windows",
                             "video.window_s=3", "video.window_stride_s=3"])
    MlflowClient(setup["uri"]).set_registered_model_alias(cfg.registry.model_name, "champion", "1")
    h264 = browser.execute_script("return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.64001E\"')")
    suffix, codec = (".mp4", "h264") if h264 == "probably" else (".webm", "libvpx-vp9")
    generate_corpus(tmp / "videos", 3, mean_video_s=12, fashion_mnist_dir=setup["raw"], seed=1, continuous_share=0,
                    suffix=suffix, codec=codec, progress=False)
    frames = ingest_videos(tmp / "videos", tmp / "frames.npz", cfg.video, cfg.ingest, log=lambda _: None).path
    segments = segment_videos(cfg, frames, tmp / "segments.npz", setup["uri"], log=lambda _: None).path
    milvus = str(tmp / "milvus.db")
    promote_segments(cfg, segments, milvus, log=lambda _: None)
    url, uv = serve_in_thread(create_app(cfg, milvus, setup["uri"], tmp / "qlog", reload_interval_s=0))
    yield url, frames, codec
    uv.should_exit = True


def test_a_video_hit_plays_its_moment_in_the_player(video_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from mrl.video.frames import load_frames

    url, frames_path, codec = video_server
    frames = load_frames(frames_path)
    row = int(frames.rows_of(frames.videos[1])[len(frames.rows_of(frames.videos[1])) // 2])  # mid-way through video 1
    query = tmp_path / "still.png"
    Image.fromarray(frames.pixels[row, 0]).save(query)

    browser.get(url + "/")
    wait_for(browser, lambda d: "videos: videos_v1" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "index").get_attribute("value") == "videos"
    browser.find_element(By.ID, "file").send_keys(str(query))
    wait_for(browser, lambda d: "results from videos_v1" in d.find_element(By.ID, "summary").text)
    body = {"image": base64.b64encode(query.read_bytes()).decode(), "k": 10, "index": "videos"}
    api = httpx.post(url + "/search", json=body, timeout=30).json()["results"]
    assert hit_ids(browser) == [h["segment_id"] for h in api]
    top = api[0]
    assert top["video_id"] == frames.video_ids[row]  # the still's own video comes first
    assert top["segment_start_s"] <= top["start_s"] <= top["best_s"] < top["end_s"] <= top["segment_end_s"]
    assert top["best_s"] > 0 and top["end_s"] - top["start_s"] <= 3.0 + 1e-6  # a moment inside one 3 s window
    assert browser.find_element(By.CSS_SELECTOR, "#results .hit .label").text == top["video_id"]
    assert not browser.find_element(By.ID, "player-panel").is_displayed()

    browser.find_elements(By.CSS_SELECTOR, "#results .hit")[0].click()
    wait_for(browser, lambda d: d.find_element(By.ID, "player-panel").is_displayed())
    assert browser.find_element(By.ID, "player").get_attribute("src") == f"{url}/videos/{top['video_id']}"
    assert browser.find_element(By.ID, "player-title").text == top["video_id"]
    assert "best frame at" in browser.find_element(By.ID, "player-span").text
    state = "const v = document.getElementById('player'); " \
            "return {t: v.currentTime, ready: v.readyState, seeking: v.seeking, paused: v.paused, ended: v.ended, " \
            "error: v.error && v.error.code, duration: v.duration};"
    # Seeked to the best frame once the metadata was in: the playhead lands inside the hit's span (polled every 50 ms:
    # it plays on from the best frame, at least one sampling step before the span's end).
    landed = wait_for(browser, lambda d: (s := d.execute_script(state))["error"] is None and s["ready"] >= 1
                      and not s["seeking"] and s["t"] > 0 and top["start_s"] - 0.05 <= s["t"] <= top["end_s"] + 0.05
                      and s, timeout=30, poll=0.05)
    assert landed["t"] >= top["best_s"] - 0.05, landed
    seeked_to = float(wait_for(browser, lambda d: d.find_element(By.ID, "player").get_attribute("data-seeked-to")))
    assert seeked_to == pytest.approx(top["best_s"], abs=0.05)
    # ... and plays (muted, so no gesture is needed for it).
    playing = wait_for(browser, lambda d: (s := d.execute_script(state))["ended"]
                       or ((not s["paused"] and s["t"] > landed["t"] + 0.1) and s), timeout=30)
    assert browser.execute_script("return document.getElementById('player').muted") is True
    assert browser.find_element(By.ID, "player-error").text == ""
    browser.execute_script("document.getElementById('player').pause()")
    shots = Path(os.environ.get("MRL_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / "player.png"))
    print(f"codec {codec}: seeked to {seeked_to:.2f}s, playhead seen at {landed['t']:.2f}s in {top['start_s']:.2f}-"
          f"{top['end_s']:.2f}s (best {top['best_s']:.2f}s), played to {playing['t']:.2f}s; screenshot "
          f"{shots / 'player.png'}")

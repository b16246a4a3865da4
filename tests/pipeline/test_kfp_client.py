"""The KFP API client sends $KFP_TOKEN as its bearer token (checked against a local HTTP server, no cluster)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipelines.launch import kfp_client


@pytest.fixture
def kfp_api():
    """A stand-in KFP API that answers every GET with {} and records the Authorization header of each."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            body = json.dumps({}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_the_kfp_token_from_the_environment_is_the_bearer_token(kfp_api, monkeypatch):
    url, seen = kfp_api
    monkeypatch.setenv("KFP_TOKEN", "t0ken")
    kfp_client(url).list_experiments()
    assert seen and all(auth == "Bearer t0ken" for _, auth in seen)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_without_a_token_no_authorization_header_is_sent(kfp_api, monkeypatch):
    url, seen = kfp_api
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    kfp_client(url).list_experiments()
    assert seen and all(auth is None for _, auth in seen)

"""The chat page's Socket.IO client: shipped, pinned, checked; the page's settings and headers.

rtkit ships ``socket.io-client``'s ``dist/socket.io.min.js`` (the version
``tests/node/package.json`` pins) and serves it itself; a CDN copy is loaded only
with a Subresource Integrity hash. The browser tests (``test_browser.py``) show the
page working offline and refusing a changed CDN file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from realtime_support import make_server, serving

from rtkit.cli import main
from rtkit.errors import ConfigurationError
from rtkit.realtime import RealtimeServer
from rtkit.realtime._page import (
    BUILT_IN_CLIENT_JS,
    BUILT_IN_CLIENT_JS_URL,
    CLIENT_JS_VERSION,
    ChatPage,
    subresource_integrity,
)
from rtkit_testing import require

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "tests" / "node"
NPM_CLIENT_JS = NODE / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
# socket.io's documentation gives this integrity for cdn.socket.io/4.8.3/socket.io.min.js.
PUBLISHED_INTEGRITY = "sha384-kzavj5fiMwLKzzD1f8S7TeoVIEi7uKHvbTA3ueZkrzYq75pNQUiUi6Dy98Q3fxb0"
PINNED_CDNS = [
    "https://cdn.socket.io/4.8.3/socket.io.min.js",
    "https://cdn.jsdelivr.net/npm/socket.io-client@4.8.3/dist/socket.io.min.js",
    "https://unpkg.com/socket.io-client@4.8.3/dist/socket.io.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/socket.io/4.8.3/socket.io.min.js",
    "//cdn.socket.io/4.8.3/socket.io.min.js",
]


def test_the_shipped_client_is_the_pinned_npm_file() -> None:
    package = json.loads((NODE / "package.json").read_text())
    assert package["dependencies"]["socket.io-client"] == CLIENT_JS_VERSION
    lock = json.loads((NODE / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/socket.io-client"]["version"] == CLIENT_JS_VERSION
    shipped = BUILT_IN_CLIENT_JS.read_bytes()
    assert shipped.startswith(f"/*!\n * Socket.IO v{CLIENT_JS_VERSION}\n".encode())
    assert (BUILT_IN_CLIENT_JS.parent / "LICENSE").read_text().startswith("The MIT License")
    # The file socket.io publishes for this version, by its published integrity...
    assert subresource_integrity(BUILT_IN_CLIENT_JS) == PUBLISHED_INTEGRITY
    # ... and the one npm installed, byte for byte.
    missing = "socket.io-client is not installed (make testdeps)"
    require(None if NPM_CLIENT_JS.is_file() else missing)
    installed = json.loads((NPM_CLIENT_JS.parents[1] / "package.json").read_text())
    assert installed["version"] == CLIENT_JS_VERSION
    npm = NPM_CLIENT_JS.read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(npm).hexdigest()


def test_the_page_loads_the_built_in_client_by_default() -> None:
    page = ChatPage()
    assert page.client_js_url == BUILT_IN_CLIENT_JS_URL
    assert page.client_js_integrity is None  # same origin: nothing to pin
    assert page.html is not None
    assert f'<script id="socket-io-client" src="{BUILT_IN_CLIENT_JS_URL}"></script>' in page.html
    assert "__RTKIT_" not in page.html
    assert "script-src 'self';" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize("url", PINNED_CDNS)
def test_the_pinned_client_on_a_cdn_gets_its_integrity(url: str) -> None:
    page = ChatPage(client_js_url=url)
    assert page.client_js_integrity == PUBLISHED_INTEGRITY
    assert page.html is not None
    tag = f'src="{url}" integrity="{PUBLISHED_INTEGRITY}" crossorigin="anonymous"'
    assert tag in page.html
    host = url.split("/")[2]
    origin = host if url.startswith("//") else f"https://{host}"
    assert f"script-src 'self' {origin};" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.socket.io/4.8.1/socket.io.min.js",  # another version
        "https://cdn.example.com/socket.io.min.js",
        "https://cdn.socket.io/4.8.3/socket.io.js",  # another file of the version
        "//evil.example/4.8.3/socket.io.min.js?x",
    ],
)
def test_another_script_from_another_site_needs_an_integrity(url: str) -> None:
    with pytest.raises(ConfigurationError, match="client_js_integrity") as refused:
        ChatPage(client_js_url=url)
    assert "none" in str(refused.value) and "built into rtkit" in str(refused.value)
    given = "sha512-" + "A" * 86 + "=="
    page = ChatPage(client_js_url=url, client_js_integrity=given)
    assert page.html is not None and f'integrity="{given}" crossorigin="anonymous"' in page.html
    unchecked = ChatPage(client_js_url=url, client_js_integrity="none")
    assert unchecked.client_js_integrity is None
    assert unchecked.html is not None and "integrity=" not in unchecked.html


@pytest.mark.parametrize(
    ("url", "integrity"),
    [
        ("javascript:alert(1)", None),
        ("data:text/javascript,alert(1)", None),
        ("https://cdn.example.com/a b.js", "none"),
        ("", None),
        ("https://cdn.example.com/io.js", "md5-abc"),
        ("https://cdn.example.com/io.js", 'sha384-x" onload="alert(1)'),
    ],
)
def test_bad_page_settings_are_refused(url: str, integrity: str | None) -> None:
    with pytest.raises(ConfigurationError):
        ChatPage(client_js_url=url or " ", client_js_integrity=integrity)


async def test_the_server_refuses_an_unpinned_script_before_it_makes_anything() -> None:
    with pytest.raises(ConfigurationError, match="client_js_integrity"):
        RealtimeServer(client_js_url="https://cdn.example.com/io.js")
    with pytest.raises(ConfigurationError, match="client_js_integrity"):
        RealtimeServer.from_url("memory://", client_js_url="https://cdn.example.com/io.js")


def test_rtkit_serve_says_what_to_do_with_an_unpinned_script(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RTKIT_SECRET", "s" * 40)
    assert main(["serve", "--client-js-url", "https://cdn.example.com/io.js"]) == 2
    assert "--client-js-integrity" in caplog.text
    assert main(["serve", "--client-js-url", "x", "--client-js-integrity", "md5-x"]) == 2
    assert "Subresource Integrity" in caplog.text


async def test_the_page_is_served_with_its_headers_and_favicon() -> None:
    url = PINNED_CDNS[0]
    server = make_server("memory://", "rtkit:", demo=True, client_js_url=url)
    async with serving(server) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert f'integrity="{PUBLISHED_INTEGRITY}"' in page.text
        assert f'data-client-js-url="{url}"' in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self' https://cdn.socket.io;" in policy
        assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert 'rel="icon" href="/static/favicon.svg"' in page.text
        icon = await http.get("/static/favicon.svg")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        client = await http.get(BUILT_IN_CLIENT_JS_URL)
        assert client.status_code == 200 and client.content == BUILT_IN_CLIENT_JS.read_bytes()

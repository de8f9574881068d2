"""The chat page at ``GET /``: its HTML, and where it loads the Socket.IO browser client.

rtkit ships the official Socket.IO browser client (``socket.io-client``
:data:`CLIENT_JS_VERSION`, MIT licensed, its license beside it in
``static/vendor/``) and the page loads it from the server's own origin, so the
chat works on a machine with no route to the internet. ``client_js_url`` points
the page elsewhere (a CDN); the page's ``<script>`` then carries a Subresource
Integrity hash, so a changed file is refused by the browser rather than run:
computed from the shipped copy when the URL names the same pinned version
(``cdn.socket.io/4.8.3/socket.io.min.js``, jsDelivr's or unpkg's
``socket.io-client@4.8.3/dist/socket.io.min.js``), given with
``client_js_integrity`` otherwise (``"none"`` loads it unchecked, knowingly).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigurationError

__all__ = [
    "BUILT_IN_CLIENT_JS",
    "BUILT_IN_CLIENT_JS_URL",
    "CLIENT_JS_VERSION",
    "NO_INTEGRITY",
    "STATIC_DIR",
    "ChatPage",
    "subresource_integrity",
]

STATIC_DIR = Path(__file__).parent / "static"

CLIENT_JS_VERSION = "4.8.3"
"""The ``socket.io-client`` version rtkit ships (``tests/node/package.json`` pins the same)."""

_VENDOR = f"vendor/socket.io-client-{CLIENT_JS_VERSION}/socket.io.min.js"
BUILT_IN_CLIENT_JS = STATIC_DIR / _VENDOR
"""The shipped ``dist/socket.io.min.js`` of the npm package, byte for byte."""

BUILT_IN_CLIENT_JS_URL = "/static/" + _VENDOR
"""Where the server serves its copy of the client (the page's default)."""

NO_INTEGRITY = "none"
"""``client_js_integrity`` that loads a script from elsewhere without an integrity check."""

# A CDN URL of the pinned client: cdn.socket.io/4.8.3/..., cdnjs .../socket.io/4.8.3/...,
# jsDelivr and unpkg .../socket.io-client@4.8.3/dist/... (the npm package's files).
_PINNED = re.compile(
    r"^(?:https?:)?//[^/?#]+/(?:[^?#]*/)?(?:socket\.io-client@)?"
    + re.escape(CLIENT_JS_VERSION)
    + r"/(?:dist/)?socket\.io\.min\.js$"
)
_HASH = r"sha(?:256|384|512)-[A-Za-z0-9+/]+={0,2}"
_SRI = re.compile(rf"^{_HASH}(?: {_HASH})*$")

_HEADERS = {
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@cache
def subresource_integrity(path: Path) -> str:
    """The ``sha384-...`` Subresource Integrity value of the file at ``path``."""
    digest = hashlib.sha384(path.read_bytes()).digest()
    return "sha384-" + base64.b64encode(digest).decode("ascii")


def _is_absolute(url: str) -> bool:
    return url.startswith("//") or bool(urlsplit(url).scheme)


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip() or any(c.isspace() for c in url):
        raise ConfigurationError(f"client_js_url must be a URL without spaces, got {url!r:.80}")
    scheme = urlsplit(url).scheme
    if scheme not in ("", "http", "https"):
        raise ConfigurationError(f"client_js_url must be an http(s) URL or a path, got {url!r:.80}")
    return url


def _integrity(url: str, given: str | None) -> str | None:
    """The ``integrity`` attribute for ``url`` (``None``: none), or a ``ConfigurationError``."""
    if given is not None:
        if given == NO_INTEGRITY:
            return None
        if not _SRI.match(given):
            raise ConfigurationError(
                f"client_js_integrity must be a Subresource Integrity value such as "
                f"'sha384-<base64>', or {NO_INTEGRITY!r}; got {given!r:.80}"
            )
        return given
    if _PINNED.match(url):
        return subresource_integrity(BUILT_IN_CLIENT_JS)
    if _is_absolute(url):
        raise ConfigurationError(
            f"the chat page would load {url!r:.120} from another site unchecked: it is not "
            f"socket.io-client {CLIENT_JS_VERSION} from a CDN (whose hash rtkit knows). Give its "
            f"hash with client_js_integrity='sha384-...' (rtkit serve --client-js-integrity), "
            f"or {NO_INTEGRITY!r} to load it without a check; or leave client_js_url out to "
            "use the copy built into rtkit"
        )
    return None  # a path on this server: same origin, nothing to pin


class ChatPage:
    """The chat page's HTML (rendered once) and its HTTP headers.

    Args:
        client_js_url: where the page loads the Socket.IO client (default: the
            copy built into rtkit, from this server).
        client_js_integrity: the ``integrity`` of that script; see the module.
        demo: the page offers demo logins by name.

    Raises:
        rtkit.errors.ConfigurationError: A URL that is not http(s) or a path, a
            malformed integrity, or a script from another site with no integrity.
    """

    def __init__(
        self,
        *,
        client_js_url: str | None = None,
        client_js_integrity: str | None = None,
        demo: bool = False,
    ) -> None:
        self.client_js_url = _check_url(client_js_url or BUILT_IN_CLIENT_JS_URL)
        self.client_js_integrity = _integrity(self.client_js_url, client_js_integrity)
        self.demo = demo
        try:
            template = (STATIC_DIR / "index.html").read_text("utf-8")
        except FileNotFoundError:
            template = None
        self.html = None if template is None else self._render(template)
        self.headers = {**_HEADERS, "Content-Security-Policy": self._policy()}

    def _render(self, template: str) -> str:
        attrs = ""
        if self.client_js_integrity is not None:
            integrity = html.escape(self.client_js_integrity, quote=True)
            attrs = f' integrity="{integrity}" crossorigin="anonymous"'
        url = html.escape(self.client_js_url, quote=True)
        page = template.replace("__RTKIT_CLIENT_JS_ATTRS__", attrs)
        page = page.replace("__RTKIT_CLIENT_JS_URL__", url)
        return page.replace("__RTKIT_DEMO__", "true" if self.demo else "false")

    def _policy(self) -> str:
        """The page's Content-Security-Policy: its own origin, plus the client's if elsewhere."""
        scripts = "'self'"
        if _is_absolute(self.client_js_url):
            parts = urlsplit(self.client_js_url)
            origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme else parts.netloc
            scripts += " " + origin
        return (
            f"default-src 'self'; script-src {scripts}; connect-src 'self'; "
            "img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'"
        )

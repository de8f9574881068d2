"""Request targets as the gateway sees them: one canonical path, a query safe to forward.

The gateway routes, caches and forwards the *normalised* path, never the raw one: an
upstream (or httpx, which removes dot-segments itself) must never see a path that
resolves to somewhere else than the route the gateway matched.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes, urljoin, urlsplit

from ..errors import MalformedRequest

__all__ = ["encode_query", "has_dot_segments", "normalize_path", "same_origin_target", "within"]

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# pchar (RFC 3986 3.3) besides unreserved characters and percent-encodings
_PATH_SAFE = _UNRESERVED | frozenset(b"!$&'()*+,;=:@")
_QUERY_SAFE = _PATH_SAFE | frozenset(b"/?")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# Decoded inside one segment, these would make an upstream split or cut the path.
_NEVER_IN_A_SEGMENT = (b"/", b"\\", b"\x00")
_DOTS = (".", "..")


def _percent_pair(raw: bytes, at: int) -> int:
    """The byte ``%XX`` at ``raw[at]`` encodes; ``MalformedRequest`` if it is no escape."""
    pair = raw[at + 1 : at + 3]
    if len(pair) != 2 or not all(c in _HEX for c in pair):
        raise MalformedRequest("the path holds a % that is not a percent-encoding")
    return int(pair, 16)


def _canonical_segment(raw: bytes) -> str:
    """One path segment in RFC 3986 6.2.2 normal form.

    Percent-encoded unreserved characters are decoded (``%2e`` is ``.``, ``%7E`` is
    ``~``), other escapes get upper-case hex, and bytes that may not appear in a path
    (spaces, non-ASCII, ``\\``, ...) are percent-encoded.
    """
    out: list[str] = []
    at = 0
    while at < len(raw):
        byte = raw[at]
        if byte == 0x25:  # %
            value = _percent_pair(raw, at)
            out.append(chr(value) if value in _UNRESERVED else f"%{value:02X}")
            at += 3
            continue
        out.append(chr(byte) if byte in _PATH_SAFE else f"%{byte:02X}")
        at += 1
    return "".join(out)


def _check_segment(segment: str) -> None:
    decoded = unquote_to_bytes(segment)
    if any(bad in decoded for bad in _NEVER_IN_A_SEGMENT):
        raise MalformedRequest("a path segment holds a /, \\ or NUL (percent-encoded)")
    if segment not in _DOTS and segment.partition(";")[0] in _DOTS:
        raise MalformedRequest("the path holds a dot-segment with parameters")


def normalize_path(raw: bytes) -> str:
    """``raw`` (a request path, still percent-encoded) in normal form, dot-segments removed.

    RFC 3986: percent-encoding normalisation (6.2.2.2), then remove_dot_segments
    (5.2.4), so ``/a/b/../c``, ``/a/b/%2e%2E/c`` and ``/a/./c`` are all ``/a/c``.

    Raises:
        rtkit.errors.MalformedRequest: ``raw`` does not start with ``/``, holds a ``%``
            that is not an escape, an encoded ``/``, ``\\`` or NUL inside a segment,
            or a dot-segment with parameters (``..;x``): nothing an upstream could
            read in only one way.
    """
    if not raw.startswith(b"/"):
        raise MalformedRequest("the request target must be a path starting with /")
    segments = raw[1:].split(b"/")
    out: list[str] = []
    for index, raw_segment in enumerate(segments):
        segment = _canonical_segment(raw_segment)
        _check_segment(segment)
        last = index == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
            continue
        if last:  # /a/b/.. is /a/: the directory, not the file
            out.append("")
    return "/" + "/".join(out)


def has_dot_segments(raw: bytes) -> bool:
    """Whether ``raw`` holds a ``.`` or ``..`` segment, percent-encoded or not."""
    return any(_canonical_segment(segment) in _DOTS for segment in raw.split(b"/"))


def encode_query(raw: bytes) -> str:
    """A query string to forward: escapes kept, other bytes not allowed in a query
    (``#``, spaces, non-ASCII) percent-encoded, a stray ``%`` as ``%25``."""
    out: list[str] = []
    for at, byte in enumerate(raw):
        if byte == 0x25:
            pair = raw[at + 1 : at + 3]
            ok = len(pair) == 2 and all(c in _HEX for c in pair)
            out.append("%" if ok else "%25")
        else:
            out.append(chr(byte) if byte in _QUERY_SAFE else f"%{byte:02X}")
    return "".join(out)


def within(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or under it (whole segments)."""
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/") or base == ""


def same_origin_target(reference: str, base: str, origin: tuple[str, str]) -> str | None:
    """The normalised ``path?query`` a ``Location`` or ``Content-Location`` value names,
    resolved against the request's ``base`` path; ``None`` unless it has the request's
    ``origin`` (scheme, host) or cannot be normalised."""
    try:
        parts = urlsplit(reference.strip())
        if parts.scheme or parts.netloc:
            scheme = (parts.scheme or origin[0]).lower()
            if (scheme, parts.netloc.lower()) != origin:
                return None
            path = parts.path or "/"
        else:
            path = urljoin(base, parts.path) if parts.path else base
        target = normalize_path(path.encode("latin-1"))
        query = encode_query(parts.query.encode("latin-1"))
    except (ValueError, UnicodeEncodeError):  # MalformedRequest is a ValueError too
        return None
    return f"{target}?{query}" if query else target

"""Every Python block in the README and the docs runs as written.

Page by page, in one namespace, the way a reader pastes the blocks into
``python -m asyncio`` (top-level ``await`` allowed), against real servers: Redis
addresses are pointed at a private ``redis-server`` of this test (so examples may
use the default prefix without touching the shared Redis), RabbitMQ is the shared
broker, and the queues and exchanges a page declares are deleted afterwards.

A block that truly cannot run carries ``<!-- not-runnable: reason -->`` on the
line before its fence; such blocks stay rare.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rtkit_testing import PrivateRedis, require

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\s*$")
SKIP = re.compile(r"^<!--\s*not-runnable:\s*(.+?)\s*-->\s*$")
REDIS_ADDRESS = re.compile(r"redis://(?:127\.0\.0\.1|localhost)(?::6379)?")
MAX_NOT_RUNNABLE = 8


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    code: str
    skip: str | None


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text("utf-8").splitlines()
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i].strip()):
            start = i + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            before = lines[i - 1].strip() if i else ""
            skip = SKIP.match(before)
            yield Block(page, start, "\n".join(lines[start:end]), skip.group(1) if skip else None)
            i = end
        i += 1


ALL = [block for page in PAGES for block in blocks(page)]
RUNNABLE_PAGES = sorted({b.page for b in ALL if b.skip is None})


# Where rtkit's design came from is for contributors (docs/architecture.md), not users;
# the Node.js chat chapter may be named once, where wire compatibility is the point.
INTERNAL_WORDS = re.compile(r"\bseed(?:'s)?\b", re.IGNORECASE)
CHAPTER = re.compile(r"\bchapter\b", re.IGNORECASE)
SRC = ROOT / "src" / "rtkit"


def _docstrings(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc and node.body:
                yield node.body[0].lineno, doc


def _user_texts() -> Iterator[tuple[str, str]]:
    from rtkit.cli import build_parser

    for page in PAGES:
        if page.name != "architecture.md":
            yield str(page.relative_to(ROOT)), page.read_text("utf-8")
    for path in sorted(SRC.rglob("*.py")):
        for line, doc in _docstrings(path):
            yield f"{path.relative_to(ROOT)}:{line}", doc
    for path in sorted((ROOT / "examples").rglob("*.py")):
        yield str(path.relative_to(ROOT)), path.read_text("utf-8")
    parser = build_parser()
    yield "rtkit --help", parser.format_help()
    for name, command in parser._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        yield f"rtkit {name} --help", command.format_help()


def test_user_docs_speak_of_rtkit() -> None:
    texts = list(_user_texts())
    assert [where for where, text in texts if INTERNAL_WORDS.search(text)] == []
    # named once where interop is the point: the chat protocol and the amqplib services
    assert sum(len(CHAPTER.findall(text)) for _, text in texts) <= 2


def test_docstring_examples_render_as_code() -> None:
    """mkdocstrings shows fenced blocks as code; doctest prompts and reST ``::`` it does not."""
    wrong = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        for line, doc in _docstrings(path)
        if re.search(r"^\s*>>>|doctest:|::\s*$", doc, re.MULTILINE)
    ]
    assert wrong == []


def test_not_runnable_blocks_stay_rare() -> None:
    skipped = [f"{b.page.name}:{b.line}: {b.skip}" for b in ALL if b.skip is not None]
    assert len(skipped) <= MAX_NOT_RUNNABLE, skipped


def _rabbit_names(kind: str) -> set[str]:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return set()
    out = subprocess.run(
        [ctl, f"list_{kind}", "-q", "--no-table-headers", "name"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def _named_in(page: Path, names: set[str]) -> set[str]:
    """The names that ``page``'s code declares: other tests share the broker meanwhile."""
    code = "\n".join(block.code for block in blocks(page))
    return {n for n in names if re.split(r"\.dlq$|\.delay\.\d+ms$", n)[0] in code}


async def _delete_new(queues: set[str], exchanges: set[str], amqp_url: str) -> None:
    if not queues and not exchanges:
        return
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in sorted(queues):
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        for name in sorted(exchanges):
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)


async def _run(block: Block, namespace: dict[str, Any], redis_url: str) -> None:
    source = REDIS_ADDRESS.sub(redis_url, block.code)
    code = compile(
        "\n" * (block.line - 1) + source,
        str(block.page),
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    result = eval(code, namespace)  # a coroutine when the block awaits
    if asyncio.iscoroutine(result):
        await result


@pytest.fixture(scope="module")
def docs_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    require(None if binary else "redis-server is not installed")
    server = PrivateRedis(binary or "redis-server")
    server.start()
    yield server.url
    server.stop()


@pytest.mark.redis
@pytest.mark.rabbitmq
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
async def test_page_runs_as_written(page: Path, docs_redis: str, amqp_url: str) -> None:
    queues, exchanges = _rabbit_names("queues"), _rabbit_names("exchanges")
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    try:
        for block in blocks(page):
            if block.skip is None:
                with contextlib.redirect_stdout(io.StringIO()):
                    await asyncio.wait_for(_run(block, namespace, docs_redis), 60)
    finally:
        await _delete_new(
            _named_in(page, _rabbit_names("queues") - queues),
            _named_in(page, _rabbit_names("exchanges") - exchanges),
            amqp_url,
        )

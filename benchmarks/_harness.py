"""The yardstick every benchmark in this folder shares.

How a figure is made, so that a sceptic can trust it:

* **Interleaved slices.** The contenders of one case take turns: rtkit, peer, peer,
  rtkit, rtkit, peer... in slices of a few tens of milliseconds (the order flips each
  round, so neither side always runs first), or whole rounds where a round is the
  unit (a load run, a fill of 100,000 users). Both sides set up outside the timed
  window, alike.
* **A ratio per round.** Each round gives rtkit's rate divided by the peer's rate in
  that same round; the table reports the **median** of those ratios and their
  **min-max**. Never a best-of, never a ratio of two medians. Rates are medians too.
* **Said where it ran.** Every run prints the exact command, the machine (CPU,
  cores, memory, Python, library versions, server versions) and how busy the
  machine was meanwhile. The machine is shared with other work: read the ratios;
  absolute rates move with the load.
* **Tables from a run.** ``--write-docs`` writes the table into the guide between
  ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; tables are never copied by hand.

Speed is never a timed assertion in a test: benchmarks decide nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "guides"

Batch = Callable[[int], Awaitable[Any]]
"""``batch(n)``: do ``n`` operations (awaited until done); the harness times it."""

Measure = Callable[[], Awaitable[float]]
"""``measure()``: one whole round of one contender; returns its figure (higher is better)."""


# --------------------------------------------------------------------------- arguments


def arguments(
    description: str | None, *, rounds: int, slice_ms: float = 40.0
) -> argparse.ArgumentParser:
    """The options every benchmark takes (``--quick``, ``--rounds``, ``--slice-ms``, ...)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run (a smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds per case ({rounds})")
    parser.add_argument("--slice-ms", type=float, default=slice_ms, help="one slice, in ms")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument(
        "--write-docs", action="store_true", help="write the table into the guide (docs/guides)"
    )
    parser.set_defaults(default_rounds=rounds)
    return parser


def rounds_of(args: argparse.Namespace, quick: int = 3) -> int:
    """How many rounds: ``--rounds``, else the benchmark's default (``quick`` with --quick)."""
    if args.rounds:
        return int(args.rounds)
    return quick if args.quick else int(args.default_rounds)


# --------------------------------------------------------------------------- measuring


async def calibrate(batch: Batch, seconds: float) -> int:
    """How many operations ``batch`` does in about ``seconds`` (after a warm-up)."""
    n = 1
    while True:
        started = time.perf_counter()
        await batch(n)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 4 or n >= 1 << 24:
            return max(1, round(n * seconds / max(elapsed, 1e-9)))
        n *= 4 if elapsed < seconds / 40 else 2


def order(names: Sequence[str], round_: int) -> list[str]:
    """The contenders' order in one round: rotated, and reversed every other round."""
    k = round_ % len(names)
    order = list(names[k:]) + list(names[:k])
    return order if (round_ // len(names)) % 2 == 0 else order[::-1]


async def alternate(
    batches: Mapping[str, Batch],
    *,
    rounds: int,
    slice_ms: float,
    after: Callable[[str], Awaitable[Any]] | None = None,
) -> dict[str, list[float]]:
    """Operations per second of each contender, per round, in interleaved slices.

    Each contender's slice is sized once (calibrated to ``slice_ms``) and then
    timed in every round; ``after(name)``, if given, runs after each slice outside
    the timed window (to let a subscriber catch up, say).
    """
    sizes = {}
    for name, batch in batches.items():  # warm up and size every slice first
        sizes[name] = await calibrate(batch, slice_ms / 1000)
        if after is not None:
            await after(name)
    rates: dict[str, list[float]] = {name: [] for name in batches}
    for round_ in range(rounds):
        for name in order(list(batches), round_):
            n = sizes[name]
            started = time.perf_counter()
            await batches[name](n)
            rates[name].append(n / (time.perf_counter() - started))
            if after is not None:
                await after(name)
    return rates


async def alternate_rounds(
    measures: Mapping[str, Measure], *, rounds: int
) -> dict[str, list[float]]:
    """Each contender's figure per round, when a whole round is the unit (interleaved)."""
    figures: dict[str, list[float]] = {name: [] for name in measures}
    for round_ in range(rounds):
        for name in order(list(measures), round_):
            gc.collect()
            figures[name].append(await measures[name]())
    return figures


def ratios(ours: Sequence[float], theirs: Sequence[float]) -> list[float]:
    """rtkit / peer, round by round."""
    return [a / b for a, b in zip(ours, theirs, strict=True) if b]


# --------------------------------------------------------------------------- results


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median (min-max)``."""
    if not values:
        return "-"
    med, low, high = statistics.median(values), min(values), max(values)
    return f"{fmt.format(med)} ({fmt.format(low)}-{fmt.format(high)})"


def rate_text(value: float) -> str:
    """A rate, short: 12,345 or 1.23M."""
    if value >= 10_000_000:
        return f"{value / 1e6:.1f}M"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


@dataclass
class Row:
    """One line of a table: a contender in a case, with its ratio to the case's peer."""

    case: str
    contender: str
    values: list[float]
    unit: str = "ops/s"
    ratio_to: str = ""
    ratio: list[float] = field(default_factory=list)
    goal: str = ""
    note: str = ""

    def value_text(self) -> str:
        if not self.values:
            return "-"
        med = statistics.median(self.values)
        return f"{rate_text(med)} ({rate_text(min(self.values))}-{rate_text(max(self.values))})"

    def ratio_text(self) -> str:
        if not self.ratio:
            return ""
        return f"{spread(self.ratio, '{:.2f}x')} vs {self.ratio_to}"

    def summary(self) -> str:
        return f"{self.value_text():>30} {self.unit:9}  {self.ratio_text()}"

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "contender": self.contender,
            "unit": self.unit,
            "values": self.values,
            "ratio_to": self.ratio_to,
            "ratio": self.ratio,
            "ratio_median": statistics.median(self.ratio) if self.ratio else None,
            "goal": self.goal,
            "note": self.note,
        }


def compare(
    case: str,
    figures: Mapping[str, list[float]],
    ours: str,
    peers: Iterable[str],
    *,
    unit: str = "ops/s",
    goals: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[Row]:
    """Rows for one case: each peer's rates, then rtkit's with its ratio to each peer."""
    labels = labels or {}
    goals = goals or {}
    rows = [Row(case, labels.get(p, p), figures[p], unit) for p in peers]
    for peer in peers:
        rows.append(
            Row(
                case,
                labels.get(ours, ours),
                figures[ours],
                unit,
                ratio_to=labels.get(peer, peer),
                ratio=ratios(figures[ours], figures[peer]),
                goal=goals.get(peer, ""),
            )
        )
    return rows


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "?"


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine so far."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _commit() -> str:
    """HEAD's short id, with ``+changes`` when the code (not the docs a run writes) differs."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "benchmarks"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (head or "?") + ("+changes" if changed else "")


def command_line() -> str:
    """The command that produced this run (the interpreter as ``python``)."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    args = [a for a in sys.argv[1:] if a != "--write-docs"]
    return " ".join(["python", shlex.quote(shown), *map(shlex.quote, args)])


class Run:
    """One benchmark run: the machine facts, the rows, the printing and the docs."""

    def __init__(self, name: str, args: argparse.Namespace, packages: Sequence[str] = ()) -> None:
        self.name = name
        self.args = args
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.servers: dict[str, str] = {}
        self.packages = ["rtkit", "redis", "hiredis", "pydantic", *packages]
        self.command = command_line()
        self.started = datetime.datetime.now(datetime.UTC)
        self._busy0 = _busy_jiffies()
        self._cpu0 = self._own_cpu()
        self._wall0 = time.monotonic()
        self._load0 = os.getloadavg()
        print(f"$ {self.command}")
        print(self.machine())
        print(self.method(), flush=True)

    @staticmethod
    def _own_cpu() -> float:
        own = os.times()
        return own.user + own.system + own.children_user + own.children_system

    def machine(self) -> str:
        versions = ", ".join(f"{p} {_version(p)}" for p in self.packages)
        return (
            f"machine: {_cpu_model()}, {os.cpu_count()} cores, {_memory()}, "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()} "
            f"(asyncio default loop); rtkit at {_commit()}; {versions}"
        )

    def method(self) -> str:
        return (
            "method: contenders interleaved in alternating order, ratio = rtkit / peer per "
            "round, shown as median (min-max) over the rounds; rates are medians (min-max); "
            "no best-of. The machine is shared with other work running at the same time."
        )

    def server(self, name: str, version: str) -> None:
        """Record a server's version (Redis, RabbitMQ, Node)."""
        self.servers[name] = version

    def add(self, rows: Iterable[Row]) -> None:
        """Add rows and print them at once (a long run shows progress)."""
        for row in rows:
            self.rows.append(row)
            print(f"  {row.case:44} {row.contender:34} {row.summary()}", flush=True)

    def note(self, text: str) -> None:
        """A sentence printed under the table (and written into the docs)."""
        self.notes.append(text)

    def load(self) -> str:
        """How busy the machine was during the run, and how much of that was this run."""
        busy1, total1 = _busy_jiffies()
        busy0, total0 = self._busy0
        wall = time.monotonic() - self._wall0
        cores = os.cpu_count() or 1
        machine = 100 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
        ours = 100 * (self._own_cpu() - self._cpu0) / (wall * cores) if wall > 0 else 0.0
        load1 = os.getloadavg()
        return (
            f"machine CPU busy {machine:.0f}% of {cores} cores over {wall:.0f} s, this process "
            f"and its children {ours:.0f}% (the servers and other work: the rest); load average "
            f"{self._load0[0]:.1f} at the start, {load1[0]:.1f} at the end"
        )

    def finish(self, doc: str | None = None) -> None:
        """Print the summary table; write JSON and the docs' table if asked."""
        load = self.load()
        servers = "; ".join(f"{k} {v}" for k, v in self.servers.items())
        print()
        print(self.text_table())
        for note in self.notes:
            print(f"note: {note}")
        if servers:
            print(f"servers: {servers}")
        print(load)
        if self.args.json:
            self.args.json.write_text(
                json.dumps(
                    {
                        "name": self.name,
                        "command": self.command,
                        "machine": self.machine(),
                        "servers": self.servers,
                        "load": load,
                        "rows": [r.as_json() for r in self.rows],
                        "notes": self.notes,
                    },
                    indent=1,
                )
            )
        if self.args.write_docs and doc is not None:
            write_block(DOCS / doc, self.name, self.markdown(load, servers))
            print(f"wrote the table into docs/guides/{doc}")

    def text_table(self) -> str:
        lines = []
        width = max((len(r.case) for r in self.rows), default=10)
        who = max((len(r.contender) for r in self.rows), default=10)
        for row in self.rows:
            lines.append(
                f"{row.case:{width}}  {row.contender:{who}}  {row.value_text():>30} {row.unit:9}"
                f"  {row.ratio_text()}{'  goal ' + row.goal if row.goal else ''}"
            )
        return "\n".join(lines)

    def markdown(self, load: str, servers: str) -> str:
        lines = [
            "| case | contender | rate, median (min-max) "
            "| rtkit ÷ peer per round, median (min-max) |",
            "|---|---|---|---|",
        ]
        for row in self.rows:
            ratio = row.ratio_text()
            if ratio and row.goal:
                ratio += f" (goal {row.goal})"
            lines.append(
                f"| {row.case} | {row.contender} | {row.value_text()} {row.unit} | {ratio} |"
            )
        when = self.started.strftime("%Y-%m-%d")
        lines += [
            "",
            f"Produced by `{self.command}` on {when}, rtkit at {_commit()}. "
            f"{self.machine().replace('machine: ', 'Machine: ', 1)}."
            + (f" Servers: {servers}." if servers else ""),
            "",
            f"During the run: {load}. The machine is shared with other work running at "
            "the same time: read the ratios; absolute rates move with the load.",
            "",
            "Method: the contenders run interleaved, in alternating order (short slices, or "
            "whole rounds where a round is the unit); each round gives a ratio rtkit ÷ peer; "
            "the table shows the median of those ratios and their min-max, and the median "
            "rate with its min-max. No best-of.",
        ]
        for note in self.notes:
            lines += ["", note]
        return "\n".join(lines)


def write_block(path: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in ``path``."""
    text = path.read_text("utf-8")
    pattern = re.compile(
        rf"(<!-- bench:{re.escape(name)} -->\n).*?(\n<!-- /bench:{re.escape(name)} -->)", re.S
    )
    if not pattern.search(text):
        raise SystemExit(f"{path}: no <!-- bench:{name} --> ... <!-- /bench:{name} --> markers")
    # Blank lines around the body: Markdown ends an HTML block (the marker) at a blank line.
    new = pattern.sub(lambda m: m.group(1) + "\n" + body + "\n" + m.group(2), text, count=1)
    path.write_text(new, "utf-8")


async def drop_keys(client: Any, *matches: str) -> None:
    """Delete a benchmark's Redis keys: those matching any of ``matches`` (SCAN patterns),
    unlinked 1,000 at a time."""
    batch: list[Any] = []
    for match in matches:
        async for key in client.scan_iter(match=match, count=5000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch = []
    if batch:
        await client.unlink(*batch)


def run(main: Callable[[], Awaitable[None]]) -> None:
    """``asyncio.run(main())`` (the default event loop: what the peers' users get too)."""
    asyncio.run(main())

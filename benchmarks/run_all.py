"""Run every benchmark in this folder, one after the other; each prints its own table.

Each ``benchmarks/<name>.py`` is a standalone script comparing rtkit with its peers
in one run, with the yardstick of ``_harness.py`` (interleaved slices, a ratio per
round, median and min-max, the command and the machine). Options are passed to
every script: ``--quick`` for a short run, ``--write-docs`` to write each table into
its guide between its markers, ``--rounds N``. Benchmarks never decide whether the
tests pass.

    python benchmarks/run_all.py [--quick] [--write-docs] [--rounds N] [--only a,b]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run each benchmark script; return non-zero if any of them crashed."""
    args = sys.argv[1:]
    only: set[str] = set()
    if "--only" in args:
        at = args.index("--only")
        only = set(args[at + 1].split(","))
        del args[at : at + 2]
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name == Path(__file__).name or script.name.startswith("_"):
            continue
        if only and script.stem not in only:
            continue
        print(f"\n=== {script.stem} ===", flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, str(script), *args], check=False).returncode
        print(f"=== {script.stem}: {time.monotonic() - started:.0f} s, exit {code} ===", flush=True)
        if code:
            failed.append(script.stem)
    if failed:
        print(f"\nbenchmarks that crashed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

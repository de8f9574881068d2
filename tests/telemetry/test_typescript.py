"""TypeScript types of the realtime protocol, generated from the same models, checked by tsc
with socket.io-client's typed ``Socket`` (``tests/node/check_types.ts``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtkit_testing import require

NODE_DIR = Path(__file__).parents[1] / "node"
TSC = NODE_DIR / "node_modules" / ".bin" / "tsc"

pytestmark = pytest.mark.node


def _tsc(folder: Path, source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(TSC),
            *("--noEmit", "--strict", "--skipLibCheck", "--target", "es2022"),
            *("--module", "nodenext", "--moduleResolution", "nodenext", source),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_generated_types_check_a_client_and_refuse_mistakes(tmp_path: Path) -> None:
    if shutil.which("node") is None or not TSC.exists():
        require("node or typescript is not installed (run make testdeps)")
    (tmp_path / "node_modules").symlink_to(NODE_DIR / "node_modules")
    subprocess.run(
        [
            *(sys.executable, "-m", "rtkit.cli", "asyncapi", "--format", "typescript"),
            *("-o", str(tmp_path / "rtkit-chat.ts")),
        ],
        check=True,
        timeout=60,
    )
    check = (NODE_DIR / "check_types.ts").read_text()
    (tmp_path / "check.ts").write_text(check)
    done = _tsc(tmp_path, "check.ts")
    assert done.returncode == 0, done.stdout + done.stderr
    # Without its @ts-expect-error, a wrong payload is an error: the types do check.
    (tmp_path / "wrong.ts").write_text(check.replace("// @ts-expect-error roomId is a string", ""))
    done = _tsc(tmp_path, "wrong.ts")
    assert done.returncode != 0 and "not assignable to type 'string'" in done.stdout

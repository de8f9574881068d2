"""``examples/chat_bots.py`` runs and its bots chat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat_bots.py"


def test_the_chat_bots_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "[bob] Ada: Hello World!" in done.stdout
    assert "[ada] Bob joined lobby" in done.stdout
    assert "[ada] notification from bob: o/" in done.stdout
    assert "history of lobby: ['Hello World!']" in done.stdout

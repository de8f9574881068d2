"""Every Python block of the messaging guide runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).parents[2] / "docs" / "guides" / "messaging.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", GUIDE.read_text("utf-8"), re.M | re.S)


def test_the_guide_has_python_blocks() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_a_guide_block_runs(number: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[number]], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr

"""The ``rtkit`` command (installed with ``pip install 'rtkit[server]'``).

``rtkit serve`` runs the Socket.IO chat server, ``rtkit token`` prints a token for
it (see the realtime guide).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rtkit`` command line; returns the exit status."""
    try:
        from .realtime._cli import main as realtime_main
    except ImportError as exc:
        sys.stderr.write(
            f"rtkit: the command needs the server extra ({exc}); "
            "install it with: pip install 'rtkit[server]'\n"
        )
        return 2
    return realtime_main(argv)


if __name__ == "__main__":
    sys.exit(main())

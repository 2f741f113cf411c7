"""``python -m pilotfish.mesh.bookinfo {productpage|details|reviews|ratings} [args]``."""

from __future__ import annotations

import importlib
import sys

from pilotfish.mesh.bookinfo import SERVICES


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in SERVICES:
        print(
            f"usage: python -m pilotfish.mesh.bookinfo {{{'|'.join(SERVICES)}}} "
            "[port] [--host HOST] [--port PORT] [--quiet]",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"pilotfish.mesh.bookinfo.{args[0]}")
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())

"""Which request-path modules run compiled (mypyc, see setup.py), and whether any compiled
module is older than its source (an edit since the last build: run `make install`)."""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def compiled_modules() -> list[Path]:
    """Extension modules next to their .py sources in this package."""
    out: list[Path] = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        out.extend(PACKAGE_DIR.rglob(f"*{suffix}"))
    return sorted(out)


def stale_compiled_modules() -> list[str]:
    """Sources edited after their compiled module was built."""
    stale = []
    for ext in compiled_modules():
        source = ext.with_name(ext.name.split(".", 1)[0] + ".py")
        if source.exists() and os.path.getmtime(source) > os.path.getmtime(ext):
            stale.append(str(source.relative_to(PACKAGE_DIR.parent)))
    return stale

"""The `matchlab` command line: one module per subcommand (extract, match, pairs, sfm, eval,
weights, datasets, demo, salvage), the options they share in `common`, and `app`, which
assembles them into the parser and runs one.

Importing this package loads neither torch nor cv2: `main`, `COMMANDS` and `build_parser`
are read from `app` on first access, and the handlers import the models they run.
"""
from __future__ import annotations

__all__ = ["main", "COMMANDS", "build_parser"]


def __getattr__(name: str):
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

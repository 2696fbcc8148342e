"""pycolmap, imported when a function first needs it (so `import matchlab` stays light)."""
from __future__ import annotations


def pycolmap_module():
    """The pycolmap module, with COLMAP's log messages going to stderr only.

    COLMAP's logger (glog) otherwise also writes every message to files in the temporary
    folder (/tmp or $TMPDIR), a new set per process, which are never removed: after a failed
    mapping they are all that is left of a run there. The messages appear on stderr as before
    (how many: `pycolmap.logging.minloglevel`).
    """
    import pycolmap

    pycolmap.logging.logtostderr = True
    return pycolmap

"""HDF5 stores for local features, matches and global descriptors, in hloc's layout.

    layout.py     FeatureStore, MatchStore, GlobalStore: hloc's features.h5 / matches.h5 /
                  global.h5, read and written (see its docstring for the layout)
    h5safe.py     opening files with errors that say what is wrong; crash-safe item writes
    h5format.py   the superblock and its checksum (stale "open for writing" flags)
    salvage.py    `salvage`: keep the intact items of a damaged file
    identity.py   which features a matches.h5 was made from (refuses matches of other ones)
    views.py      KeypointsView, MatchesView: read-only mappings reading one item per access

Crash safety: a run killed at any moment (SIGKILL included) leaves a file the next run opens
and completes (see h5safe).

A file that HDF5 cannot open at all (truncated by a full disk or an unfinished copy, or
otherwise damaged) raises `StoreError` naming it and saying what to do; a file that cannot be
opened for another reason (permission denied, a read-only file system, another process
writing it) says so, and that its contents are not damaged. `salvage(path)` (or
`matchlab salvage PATH`) copies every item that still reads back intact into a fresh file and
keeps the damaged one as PATH.corrupt; when the file's index of items is itself lost (HDF5
keeps it near the end of the file, so most truncations lose it) it says so and changes
nothing. Salvage is automatic only for damage a killed matchlab writer left (the root mark
says so); a file that does not open is never salvaged implicitly: it may be an unfinished
copy of a good one, and silently shrinking it would hide that.
"""
from ..errors import MissingItemError, StoreError
from .layout import FeatureStore, GlobalStore, MatchStore, names_to_pair, names_to_pair_old
from .salvage import salvage
from .tree import WRITING
from .views import KeypointsView, MatchesView

__all__ = ["FeatureStore", "GlobalStore", "KeypointsView", "MatchStore", "MatchesView",
           "MissingItemError", "StoreError", "WRITING", "names_to_pair", "names_to_pair_old",
           "salvage"]

"""Every error matchlab raises on purpose: one family under `MatchlabError`.

The command line prints a `MatchlabError` as one line (`matchlab: error: ...`, exit status 1)
and lets anything else (a bug, CUDA out of memory) show its traceback. Each class keeps the
builtin ancestry callers caught before (`except ValueError` still catches a `ConfigError`).
This module imports nothing heavy, so any module may import it.
"""
from __future__ import annotations

import os


class MatchlabError(Exception):
    """Base of every error matchlab raises on purpose; its message says what to do."""


class ConfigError(MatchlabError, ValueError):
    """A model or command was given an option it does not know, or a bad value."""


class ShapeError(MatchlabError, ValueError):
    """An input tensor has the wrong shape, dtype or values; the message names it."""


class ImageError(MatchlabError, ValueError):
    """An image file is missing, empty, truncated, too large or not decodable. `path` names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")


class StoreError(MatchlabError, RuntimeError):
    """An HDF5 store cannot be opened, read or written; the message names the file."""


class MissingItemError(StoreError, KeyError):
    """The requested image or pair is not in the store; the message names it and the file."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class OutputMismatchError(MatchlabError, ValueError):
    """An output file holds results of another model or other settings than this run's."""


class OutputConflictError(MatchlabError, FileExistsError):
    """An output path holds files matchlab did not write; they are never deleted or replaced."""


class WeightsError(MatchlabError, RuntimeError):
    """A weight file could not be obtained or verified; the message lists every source tried."""


class DatasetError(MatchlabError, RuntimeError):
    """A dataset is unknown, or could not be obtained or verified (the message says why)."""


class PairsFileError(MatchlabError, ValueError):
    """A pairs file (or pairs spec) is malformed, or cannot be written; the message names the
    file and the line or the reason."""


class CamerasFileError(MatchlabError, ValueError):
    """A query-cameras or poses file (hloc's text formats) is malformed; the message names
    the file and the line."""


class DatabaseError(MatchlabError, ValueError):
    """Bad inputs for the COLMAP database, or a database inconsistent with the inputs."""


class OptionsError(MatchlabError, ValueError):
    """A pycolmap option key is unknown, ambiguous, shadowed, or its value has the wrong type."""


class ReconstructionError(MatchlabError, RuntimeError):
    """Mapping produced no model, or a model cannot be compared as asked."""


class UsageError(MatchlabError):
    """A command was called with arguments that cannot work together (the CLI's own errors)."""


class ClusterError(MatchlabError, RuntimeError):
    """A cluster executor could not start, reach its cluster or keep its workers alive."""

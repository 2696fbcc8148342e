"""hloc's text formats for query cameras and camera poses, and their pycolmap objects.

cameras file  one camera per line: `name MODEL WIDTH HEIGHT params...` (COLMAP model names
              and parameter order, e.g. `q.jpg SIMPLE_RADIAL 1024 768 880 512 384 0.01`);
              blank lines and lines starting with '#' are ignored.
poses file    one pose per line: `name qw qx qy qz tx ty tz`, world-to-camera
              (x_cam = R(q) X_world + t), the format hloc's localization writes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import CamerasFileError
from .colmap import pycolmap_module as _pycolmap

__all__ = ["read_cameras_file", "camera_from_entry", "camera_entry", "pose_to_qt",
           "pose_from_qt", "write_poses_file", "read_poses_file"]


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CamerasFileError(f"cannot read {path}: {e}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line.split()


def read_cameras_file(path: str | os.PathLike) -> dict[str, dict]:
    """{image name: {"model", "width", "height", "params"}} from a cameras file (module doc).

    Every entry is checked by building its pycolmap camera (unknown model, wrong number of
    parameters are a `CamerasFileError` naming the line)."""
    path = Path(path)
    cameras = {}
    for number, fields in _lines(path):
        where = f"{path} line {number}"
        if len(fields) < 5:
            raise CamerasFileError(f"{where}: expected 'name MODEL WIDTH HEIGHT params...', "
                                   f"got {' '.join(fields)!r}")
        try:
            entry = {"model": fields[1], "width": int(fields[2]), "height": int(fields[3]),
                     "params": [float(v) for v in fields[4:]]}
        except ValueError:
            raise CamerasFileError(f"{where}: width, height and params must be numbers: "
                                   f"{' '.join(fields)!r}") from None
        camera_from_entry(entry, where)
        cameras[fields[0]] = entry
    return cameras


def camera_from_entry(entry: Mapping, where: str = "camera"):
    """A pycolmap.Camera from {"model", "width", "height", "params"}."""
    pycolmap = _pycolmap()
    try:
        camera = pycolmap.Camera(model=entry["model"], width=int(entry["width"]),
                                 height=int(entry["height"]), params=list(entry["params"]))
    except (ValueError, TypeError, RuntimeError) as e:
        raise CamerasFileError(f"{where}: bad camera {dict(entry)}: {e}") from None
    if not camera.verify_params():
        raise CamerasFileError(f"{where}: {entry['model']} takes parameters "
                               f"{camera.params_info}, got {len(entry['params'])}")
    return camera


def camera_entry(camera) -> dict:
    """{"model", "width", "height", "params"} of a pycolmap.Camera (JSON-ready)."""
    return {"model": camera.model.name, "width": int(camera.width),
            "height": int(camera.height), "params": [float(v) for v in camera.params]}


def pose_to_qt(cam_from_world) -> tuple[list[float], list[float]]:
    """(q [w, x, y, z], t [3]) of a pycolmap.Rigid3d (pycolmap's quat is x, y, z, w)."""
    x, y, z, w = (float(v) for v in cam_from_world.rotation.quat)
    return [w, x, y, z], [float(v) for v in cam_from_world.translation]


def pose_from_qt(q, t):
    """pycolmap.Rigid3d from q [w, x, y, z] and t [3] (world-to-camera)."""
    pycolmap = _pycolmap()
    w, x, y, z = (float(v) for v in q)
    quat = np.array([x, y, z, w]) / np.linalg.norm([x, y, z, w])
    return pycolmap.Rigid3d(pycolmap.Rotation3d(quat), np.asarray(t, dtype=np.float64))


def write_poses_file(path: str | os.PathLike,
                     poses: Mapping[str, tuple[list[float], list[float]]]) -> Path:
    """Write {name: (q [w, x, y, z], t [3])} as a poses file, atomically (temp + rename)."""
    path = Path(path)
    text = "".join(f"{name} {' '.join(repr(float(v)) for v in (*q, *t))}\n"
                   for name, (q, t) in poses.items())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_poses_file(path: str | os.PathLike) -> dict[str, tuple[list[float], list[float]]]:
    """{name: (q [w, x, y, z], t [3])} from a poses file (module doc)."""
    path = Path(path)
    poses = {}
    for number, fields in _lines(path):
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            values = []
        if len(values) != 7:
            raise CamerasFileError(f"{path} line {number}: expected 'name qw qx qy qz tx ty "
                                   f"tz', got {' '.join(fields)!r}")
        poses[fields[0]] = (values[:4], values[4:])
    return poses

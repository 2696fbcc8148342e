"""hloc's text formats for query cameras and camera poses, and their pycolmap objects.

cameras file  one camera per line: `name MODEL WIDTH HEIGHT params...` (COLMAP model names
              and parameter order, e.g. `q.jpg SIMPLE_RADIAL 1024 768 880 512 384 0.01`);
              blank lines and lines starting with '#' are ignored.
poses file    one pose per line: `name qw qx qy qz tx ty tz`, world-to-camera
              (x_cam = R(q) X_world + t), the format hloc's localization writes.

Known poses for triangulation come from one of two sources, each with one reader:
`read_known_poses` (a poses file with a cameras file, or a COLMAP model folder), and
`model_from_poses` turns them into a pycolmap.Reconstruction without points.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import CamerasFileError
from .colmap import pycolmap_module as _pycolmap

__all__ = ["read_cameras_file", "camera_from_entry", "camera_entry", "pose_to_qt",
           "pose_from_qt", "write_poses_file", "read_poses_file", "read_known_poses",
           "model_from_poses"]


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
        if len(values) != 7 or not np.isfinite(values).all():
            raise CamerasFileError(f"{path} line {number}: expected 'name qw qx qy qz tx ty "
                                   f"tz' (7 finite numbers), got {' '.join(fields)!r}")
        if np.linalg.norm(values[:4]) < 1e-12:
            raise CamerasFileError(f"{path} line {number}: the quaternion of {fields[0]} is "
                                   f"zero")
        if fields[0] in poses:
            raise CamerasFileError(f"{path} line {number}: a second pose for {fields[0]}")
        poses[fields[0]] = (values[:4], values[4:])
    return poses


def read_known_poses(poses: str | os.PathLike, cameras: str | os.PathLike | None = None
                     ) -> tuple[dict, list[str]]:
    """({image name: (cam_from_world pycolmap.Rigid3d, camera entry)}, names without pose).

    poses: a COLMAP model folder (cameras + images, binary or text; its points are not
    used; its images without a pose are the second value; image id order), or a poses
    file (module doc, line order)
    read with `cameras`, a cameras file that must name every image of the poses file.
    A camera entry is {"model", "width", "height", "params"} (`camera_entry`)."""
    poses = Path(poses)
    if poses.is_dir():
        if cameras is not None:
            raise CamerasFileError(f"{poses} is a COLMAP model, which holds its cameras; "
                                   f"a cameras file applies to a poses file only")
        from .reconstruction import read_model

        try:
            rec = read_model(poses)
        except (ValueError, RuntimeError) as e:
            raise CamerasFileError(f"{poses} is not a COLMAP model folder (cameras, images; "
                                   f"binary or text): {e}") from None
        known, unposed = {}, []
        for image in sorted(rec.images.values(), key=lambda im: im.image_id):
            if not image.has_pose:
                unposed.append(image.name)
                continue
            known[image.name] = (image.cam_from_world(),
                                 camera_entry(rec.cameras[image.camera_id]))
        return known, sorted(unposed)
    if cameras is None:
        raise CamerasFileError(f"{poses} is a poses file; its intrinsics must come with it "
                               f"as a cameras file ('name MODEL WIDTH HEIGHT params...')")
    entries = read_cameras_file(cameras)
    read = read_poses_file(poses)
    missing = [n for n in read if n not in entries]
    if missing:
        raise CamerasFileError(f"{len(missing)} image(s) of {poses} have no camera in "
                               f"{cameras}: {', '.join(missing[:5])}")
    return {n: (pose_from_qt(q, t), entries[n]) for n, (q, t) in read.items()}, []


def model_from_poses(known: Mapping[str, tuple], names=None):
    """A pycolmap.Reconstruction of {name: (cam_from_world, camera entry)}: no points, one
    camera (and trivial rig) per distinct camera entry, one registered image and trivial
    frame per name.

    names: put only these images in it (default: all). Ids are numbered over all of
    `known` in its order (images 1, 2, ...; cameras in order of first use), so they do not
    depend on `names`: a rerun with one more readable image keeps the others' ids."""
    pycolmap = _pycolmap()
    keep = set(known if names is None else names)
    rec = pycolmap.Reconstruction()
    camera_ids: dict[str, int] = {}
    for image_id, (name, (pose, entry)) in enumerate(known.items(), 1):
        key = repr((entry["model"], entry["width"], entry["height"], list(entry["params"])))
        camera_id = camera_ids.setdefault(key, len(camera_ids) + 1)
        if name not in keep:
            continue
        if not rec.exists_camera(camera_id):
            camera = camera_from_entry(entry, f"camera of {name}")
            camera.camera_id = camera_id
            camera.has_prior_focal_length = True  # known: verification uses E, not F
            rec.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=name, camera_id=camera_id, image_id=image_id)
        rec.add_image_with_trivial_frame(image, pose)
    return rec

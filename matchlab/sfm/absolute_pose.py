"""One query against a model: matches to model images -> 2D-3D correspondences -> pose.

`ModelTracks` gives, for each keypoint of a model image, the 3D point it observes (the
model's points2D follow the keypoint order of the model's features.h5: `matchlab sfm` writes
features.h5's keypoints into the COLMAP database in that order; checked per image).
`estimate_pose` runs pycolmap's LO-RANSAC absolute pose with non-linear refinement
(`pycolmap.estimate_and_refine_absolute_pose`) and accepts a pose only with enough inliers.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ReconstructionError
from ..types import Features
from .colmap import pycolmap_module as _pycolmap
from .poses import camera_entry, camera_from_entry, pose_to_qt

FRAME = "frame:"  # prefix of an earlier query frame among the images a query is matched to

__all__ = ["FRAME", "ModelTracks", "PoseOptions", "estimate_pose", "query_camera", "lift_matches"]


@dataclass(frozen=True)
class PoseOptions:
    """Thresholds of the query pose estimation.

    max_error:         RANSAC inlier threshold, reprojection error in pixels (hloc's 12).
    min_inliers:       fewer inliers than this: not localized (COLMAP's registration uses 30).
    min_inlier_ratio:  inliers / 2D-3D correspondences below this: not localized (COLMAP's
                       registration uses 0.25).
    batch_size:        query-model pairs per `match_batch` call (speed only).
    seed:              RANSAC seed (repeatable runs).
    """

    max_error: float = 12.0
    min_inliers: int = 30
    min_inlier_ratio: float = 0.25
    batch_size: int = 8
    seed: int = 0

    def as_dict(self) -> dict:
        """The options that change results (batch_size does not)."""
        out = asdict(self)
        out.pop("batch_size")
        return out


class ModelTracks:
    """A model folder opened for localization: its registered images, their features and
    the 3D point seen by each keypoint. Use as a context manager (holds features.h5 open).

    names: the registered images' names (sorted). `features(name)` -> Features (cached);
    `point_ids(name)` -> [N] int64, the 3D point id of each keypoint or -1;
    `xyz(ids)` -> [M, 3] float64 world coordinates of 3D points.
    """

    def __init__(self, sfm_dir: str | Path, cache_size: int = 64) -> None:
        from ..store import FeatureStore
        from .reconstruction import read_model

        sfm_dir = Path(sfm_dir)
        self.rec = read_model(sfm_dir / "sparse")
        self.images = {self.rec.images[i].name: self.rec.images[i]
                       for i in self.rec.reg_image_ids()}
        self.names = sorted(self.images)
        if not self.names:
            raise ReconstructionError(f"the model in {sfm_dir / 'sparse'} has no registered "
                                      f"images")
        self.store = FeatureStore(sfm_dir / "features.h5", "r")
        missing = [n for n in self.names if n not in self.store]
        if missing:
            self.store.close()
            raise ReconstructionError(f"{len(missing)} model image(s) have no features in "
                                      f"{sfm_dir / 'features.h5'}: {missing[:5]}")
        self.cache_size = cache_size
        self._features: OrderedDict[str, Features] = OrderedDict()
        self._ids: dict[str, np.ndarray] = {}

    def __enter__(self) -> "ModelTracks":
        return self

    def __exit__(self, *exc) -> None:
        self.store.close()

    def features(self, name: str) -> Features:
        if name in self._features:
            self._features.move_to_end(name)
        else:
            self._features[name] = self.store.read(name)
            if len(self._features) > self.cache_size:
                self._features.popitem(last=False)
        return self._features[name]

    def point_ids(self, name: str) -> np.ndarray:
        if name not in self._ids:
            image = self.images[name]
            points = image.points2D
            keypoints = self.store.read_keypoints(name)
            xy = np.array([p.xy for p in points], np.float64).reshape(-1, 2) - 0.5
            if len(xy) != len(keypoints) or not np.allclose(xy, keypoints, atol=1e-2):
                raise ReconstructionError(
                    f"the model's keypoints of {name!r} ({len(xy)}) differ from those in "
                    f"features.h5 ({len(keypoints)}): the model was not made from these "
                    f"features")
            self._ids[name] = np.array([p.point3D_id if p.has_point3D() else -1
                                        for p in points], np.int64)
        return self._ids[name]

    def xyz(self, ids: np.ndarray) -> np.ndarray:
        points = self.rec.points3D
        return np.array([points[int(i)].xyz for i in ids], np.float64).reshape(-1, 3)


def lift_matches(matches: Mapping[str, np.ndarray], model: ModelTracks) -> np.ndarray:
    """[M, 2] unique (query keypoint, 3D point id) from {model image: [K, 2] (query keypoint,
    model keypoint)} matches; matches to keypoints without a 3D point are dropped. A query
    keypoint may get several 3D points (from different images); each is kept, as in hloc."""
    lifted = []
    for name, pairs in matches.items():
        ids = model.point_ids(name)[pairs[:, 1]]
        keep = ids >= 0
        lifted.append(np.stack([pairs[keep, 0], ids[keep]], 1))
    if not lifted:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(lifted).astype(np.int64), axis=0)


def query_camera(name: str, path: Path, image_size: tuple[int, int],
                 cameras: Mapping[str, dict], camera_model: str):
    """(pycolmap.Camera, source) of a query: its entry in `cameras` ('file'), else COLMAP's
    guess from the image: EXIF focal length ('exif') or 1.2 x the long side ('prior'), in
    `camera_model`, principal point at the centre. image_size: (W, H) as matchlab reads
    the image (EXIF orientation applied)."""
    pycolmap = _pycolmap()
    if name in cameras:
        camera = camera_from_entry(cameras[name], f"camera of {name}")
        if (camera.width, camera.height) != tuple(image_size):
            raise ReconstructionError(f"the camera of {name} is {camera.width}x{camera.height} "
                                      f"but the image is {image_size[0]}x{image_size[1]}")
        return camera, "file"
    options = pycolmap.ImageReaderOptions()
    options.camera_model = camera_model
    try:
        guess = pycolmap.infer_camera_from_image(str(path), options)
    except (ValueError, RuntimeError):  # a format COLMAP cannot read (matchlab could)
        guess = None
    if guess is None or not guess.has_prior_focal_length:
        focal = 1.2 * max(image_size)  # COLMAP's prior without EXIF
        return pycolmap.Camera.create_from_model_name(0, camera_model, focal, *image_size), "prior"
    if (guess.width, guess.height) != tuple(image_size):  # EXIF-rotated: same focal in px
        guess = pycolmap.Camera.create_from_model_name(0, camera_model, guess.mean_focal_length(),
                                                      image_size[0], image_size[1])
    return guess, "exif"


def _match(query: Features, names: Sequence[str], model: ModelTracks, matcher,
           batch_size: int, device=None) -> dict[str, np.ndarray]:
    """{model image: [K, 2] (query keypoint, model keypoint)} matches."""
    out = {}
    moved = (lambda f: f) if device is None else (lambda f: f.to(device))
    query = moved(query)
    for start in range(0, len(names), batch_size):
        chunk = names[start:start + batch_size]
        pairs = [(query, moved(model.features(n))) for n in chunk]
        for name, result in zip(chunk, matcher.match_batch(pairs)):
            out[name] = result.pairs().cpu().numpy().astype(np.int64)
    return out


def estimate_pose(query: Features, names: Sequence[str], model: ModelTracks, matcher, camera,
                  refine_camera: bool, options: PoseOptions, device=None
                  ) -> tuple[dict, tuple | None]:
    """Match `query` to the model images `names`, lift, estimate its pose.

    model: a `ModelTracks`, or anything with its features / point_ids / xyz (names starting
    with FRAME are earlier query frames: `sequence.SequenceTracks`).
    device: where the matcher runs (features are moved there; default: where they are).
    camera: the query's pycolmap.Camera (refined in place when refine_camera: focal length
    and distortion; the focal is also estimated by RANSAC when it has no EXIF prior).
    Returns (record, drawing). The query's record: status, reason (when not localized),
    num_matches, num_2d3d, inliers, model_images, and when localized cam_from_world
    {"q": [w, x, y, z], "t": [3]} (world-to-camera), camera {"model", "width", "height",
    "params"} and inliers_per_image {model image: inlier matches}, most first. drawing: None,
    or for a localized query (model image with the most inliers, its [K, 2] matches (query
    keypoint, model keypoint) that have a 3D point, [K] bool pose inliers, and the [I, 2]
    inlier correspondences (query keypoint, 3D point id)).
    """
    pycolmap = _pycolmap()
    matches = _match(query, list(names), model, matcher, max(1, options.batch_size), device)
    corr = lift_matches(matches, model)
    record = {"status": "not localized", "model_images": list(names),
              "num_matches": int(sum(len(m) for m in matches.values())),
              "num_2d3d": int(len(corr)), "inliers": 0}
    if len(corr) < max(options.min_inliers, 4):
        record["reason"] = (f"only {len(corr)} 2D-3D correspondences (at least "
                            f"{options.min_inliers} needed)")
        return record, None
    points2d = query.keypoints.cpu().numpy().astype(np.float64)[corr[:, 0]] + 0.5  # COLMAP px
    points3d = model.xyz(corr[:, 1])
    estimation = pycolmap.AbsolutePoseEstimationOptions()
    estimation.ransac.max_error = options.max_error
    estimation.ransac.random_seed = options.seed
    estimation.estimate_focal_length = refine_camera and not camera.has_prior_focal_length
    refinement = pycolmap.AbsolutePoseRefinementOptions()
    refinement.refine_focal_length = refinement.refine_extra_params = refine_camera
    found = pycolmap.estimate_and_refine_absolute_pose(points2d, points3d, camera, estimation,
                                                       refinement)
    if found is None:
        record["reason"] = "pose estimation failed (no consistent pose)"
        return record, None
    inliers = int(found["num_inliers"])
    record["inliers"] = inliers
    if inliers < options.min_inliers or inliers < options.min_inlier_ratio * len(corr):
        record["reason"] = (f"{inliers} inliers of {len(corr)} 2D-3D correspondences (needs "
                            f"{options.min_inliers} and {options.min_inlier_ratio:.0%})")
        return record, None
    q, t = pose_to_qt(found["cam_from_world"])
    record.update(status="localized", cam_from_world={"q": q, "t": t},
                  camera=camera_entry(camera))
    flags = _inlier_flags(matches, model, corr[found["inlier_mask"]])
    record["inliers_per_image"] = dict(sorted(((n, int(f.sum())) for n, f in flags.items()),
                                              key=lambda item: -item[1]))
    best = next(n for n in record["inliers_per_image"] if not n.startswith(FRAME))
    lifted = model.point_ids(best)[matches[best][:, 1]] >= 0
    return record, (best, matches[best][lifted], flags[best][lifted],
                    corr[found["inlier_mask"]])


def _inlier_flags(matches: Mapping[str, np.ndarray], model: ModelTracks,
                  inliers: np.ndarray) -> dict[str, np.ndarray]:
    """{model image: [K] bool, True where the match's 2D-3D correspondence is a pose inlier}."""
    good = {tuple(p) for p in inliers.tolist()}
    flags = {}
    for name, pairs in matches.items():
        ids = model.point_ids(name)[pairs[:, 1]]
        flags[name] = np.array([p >= 0 and (int(i), int(p)) in good
                                for i, p in zip(pairs[:, 0], ids)], bool)
    return flags

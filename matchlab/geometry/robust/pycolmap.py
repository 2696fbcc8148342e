"""pycolmap backend: LO-RANSAC homography and essential matrix (COLMAP's estimators); see
`base` for the estimator protocol."""
from __future__ import annotations

import numpy as np

from ..primitives.camera import homogeneous
from ..primitives.epipolar import essential_from_pose
from .base import matched_points, two_view_geometry


def homography_lo_ransac(kpts0: np.ndarray, kpts1: np.ndarray, K0=None, K1=None, *,
                         threshold_px: float = 3.0, scores=None, seed: int = 0):
    """pycolmap LO-RANSAC homography (x1 ~ H x0, pixels; at most 10,000 trials)."""
    import pycolmap

    kpts0, kpts1 = matched_points(kpts0, kpts1)
    if len(kpts0) < 4:
        return None
    options = pycolmap.RANSACOptions(max_error=threshold_px, random_seed=seed, max_num_trials=10000)
    result = pycolmap.estimate_homography_matrix(kpts0, kpts1, options)
    if result is None:
        return None
    return two_view_geometry("homography", result["H"], result["inlier_mask"])


def _pinhole(K: np.ndarray):
    import pycolmap

    K = np.asarray(K, dtype=np.float64)
    # width/height only bound the image; the estimator works on normalised rays
    return pycolmap.Camera(model="PINHOLE", width=int(2 * K[0, 2]) + 1, height=int(2 * K[1, 2]) + 1,
                           params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])


def essential_lo_ransac(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                        threshold_px: float = 1.0, scores=None, seed: int = 0):
    """pycolmap LO-RANSAC essential matrix (threshold in pixels, confidence 0.99999, at most
    10,000 trials), decomposed by cheirality."""
    import pycolmap

    kpts0, kpts1 = matched_points(kpts0, kpts1)
    if len(kpts0) < 5:
        return None
    options = pycolmap.RANSACOptions(max_error=float(threshold_px), random_seed=int(seed),
                                     confidence=0.99999, max_num_trials=10000)
    result = pycolmap.estimate_essential_matrix(kpts0, kpts1, _pinhole(K0), _pinhole(K1), options)
    if result is None:
        return None
    pose = result["cam2_from_cam1"]
    R = np.asarray(pose.rotation.matrix(), dtype=np.float64)
    t = np.asarray(pose.translation, dtype=np.float64)
    norm = np.linalg.norm(t)
    t = t / norm if norm > 0 else t
    return two_view_geometry("essential", essential_from_pose(R, t), result["inlier_mask"], R, t)


def refine_relative_pose(R: np.ndarray, t: np.ndarray, x0: np.ndarray, x1: np.ndarray):
    """pycolmap's Sampson-error refinement of (R, t) on normalised inlier matches x0, x1
    [N, 2]: (R [3, 3], t [3] unit), or None when it fails."""
    import pycolmap

    rays0, rays1 = homogeneous(x0), homogeneous(x1)
    rays0 /= np.linalg.norm(rays0, axis=1, keepdims=True)
    rays1 /= np.linalg.norm(rays1, axis=1, keepdims=True)
    out = pycolmap.refine_relative_pose(pycolmap.Rigid3d(pycolmap.Rotation3d(R), t), rays0, rays1,
                                        np.ones((len(x0), 1), dtype=bool))
    if out is None:
        return None
    pose = out["cam2_from_cam1"] if isinstance(out, dict) else out
    t2 = np.asarray(pose.translation, dtype=np.float64)
    return np.asarray(pose.rotation.matrix(), dtype=np.float64), t2 / max(np.linalg.norm(t2), 1e-300)

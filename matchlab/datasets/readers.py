"""Ground-truth readers for the sample datasets: homographies, Strecha cameras, ScanNet pairs.

All arrays are float64 numpy arrays. Pixel coordinates are those of OpenCV
(`cv2.warpPerspective`, `cv2.projectPoints`): x to the right, y down, in pixels of the full,
original image. Poses map points between frames as `x_b = R x_a + t`; a 4x4 `T_0to1` is
[[R, t], [0, 0, 0, 1]] and takes camera-0 coordinates to camera-1 coordinates, so that
E = [t]_x R and x1^T K1^-T E K0^-1 x0 = 0 for corresponding pixels (SuperGlue's convention).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import get_dataset
from .resolve import dataset_path

PathLike = str | os.PathLike


@dataclass(frozen=True, eq=False)
class HomographyPair:
    """Two images of a plane: `H` [3, 3] maps image0 pixels to image1 pixels (x1 ~ H x0)."""

    image0: Path
    image1: Path
    H: np.ndarray


@dataclass(frozen=True, eq=False)
class Camera:
    """A calibrated camera, Strecha's parametrisation.

    K [3, 3] intrinsics (pixels); R [3, 3] camera-to-world rotation (its columns are the camera
    axes in world coordinates); C [3] camera centre in world coordinates (metres for Strecha);
    width, height of the image in pixels. A world point X projects to x ~ K R^T (X - C).
    """

    K: np.ndarray
    R: np.ndarray
    C: np.ndarray
    width: int
    height: int

    def world_to_camera(self) -> tuple[np.ndarray, np.ndarray]:
        """(R_cw [3, 3], t [3]) with x_cam = R_cw X_world + t, i.e. R_cw = R^T, t = -R^T C."""
        R_cw = self.R.T
        return R_cw, -R_cw @ self.C


@dataclass(frozen=True, eq=False)
class PosePair:
    """Two calibrated images: K0, K1 [3, 3] (pixels, full image), T_0to1 [4, 4] (camera 0 -> 1)."""

    name0: str
    name1: str
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray


def read_homography(path: PathLike) -> np.ndarray:
    """A 3x3 homography from whitespace-separated text (Oxford `H1toNp`, EVD `h/NAME.txt`).

    Returns H [3, 3] float64 scaled so that H[2, 2] == 1 (homographies are defined up to
    scale; the files do not agree on one, e.g. EVD's have H[2, 2] < 0). It maps pixels of the
    first image to the second: [x2, y2, 1] ~ H [x1, y1, 1].
    """
    values = np.array(Path(path).read_text().split(), dtype=np.float64)
    if values.size != 9:
        raise ValueError(f"{path}: expected 9 numbers (a 3x3 homography), got {values.size}")
    H = values.reshape(3, 3)
    if abs(H[2, 2]) < 1e-12:
        raise ValueError(f"{path}: H[2, 2] is 0, cannot normalise")
    return H / H[2, 2]


def homography_pairs(name: str) -> list[HomographyPair]:
    """The ground-truth pairs of a homography dataset, images as verified local paths.

    - 'oxford_graf': img1 -> img2 .. img1 -> img6 (5 pairs, increasing viewpoint change);
    - 'evd': 1/NAME.png -> 2/NAME.png for the 15 NAMEs, sorted.
    """
    root = dataset_path(name)
    if name == "oxford_graf":
        return [HomographyPair(root / "img1.png", root / f"img{n}.png",
                               read_homography(root / f"H1to{n}p")) for n in range(2, 7)]
    if name == "evd":
        stems = sorted(Path(f.path).stem for f in get_dataset(name).files if f.path.startswith("h/"))
        return [HomographyPair(root / "1" / f"{s}.png", root / "2" / f"{s}.png",
                               read_homography(root / "h" / f"{s}.txt")) for s in stems]
    raise ValueError(f"{name!r} has no homography ground truth; use 'oxford_graf' or 'evd'")


def read_strecha_camera(path: PathLike) -> Camera:
    """A Strecha `.camera` file: 26 numbers, K (3x3) / distortion (3, must be 0) / R (3x3,
    camera-to-world) / C (3) / width height."""
    values = np.array(Path(path).read_text().split(), dtype=np.float64)
    if values.size != 26:
        raise ValueError(f"{path}: expected 26 numbers (K, distortion, R, C, width, height), "
                         f"got {values.size}")
    if np.any(values[9:12] != 0):
        raise ValueError(f"{path}: non-zero radial distortion {values[9:12]} is not supported")
    return Camera(K=values[:9].reshape(3, 3), R=values[12:21].reshape(3, 3), C=values[21:24],
                  width=int(values[24]), height=int(values[25]))


def strecha_cameras(name: str = "strecha_fountain_P11") -> dict[str, Camera]:
    """Image name ('0000.jpg', files under `images/`) -> its ground-truth Camera, sorted."""
    root = dataset_path(name)
    suffix = ".camera"
    return {Path(f.path).name[:-len(suffix)]: read_strecha_camera(root / f.path)
            for f in get_dataset(name).files if f.path.endswith(suffix)}


def strecha_gravity(name: str = "strecha_fountain_P11") -> dict[str, np.ndarray]:
    """Image name -> gravity [3] (unit down direction in camera coordinates) from the
    ground-truth cameras, taking world +z as down: the sequence's world frame is level (the 11
    camera centres of fountain_P11 lie within 0.25 m of z = 0 along a 15 m walk, and every
    camera's down axis is within 7 degrees of world +z: the cameras pitch up at the
    fountain), so this is what an IMU would give."""
    return {n: c.R.T @ np.array([0.0, 0.0, 1.0]) for n, c in strecha_cameras(name).items()}


def relative_pose(cam0: Camera, cam1: Camera) -> np.ndarray:
    """T_0to1 [4, 4]: camera-0 coordinates -> camera-1 coordinates (x1 = R x0 + t)."""
    R0, t0 = cam0.world_to_camera()
    R1, t1 = cam1.world_to_camera()
    T = np.eye(4)
    T[:3, :3] = R1 @ R0.T
    T[:3, 3] = t1 - T[:3, :3] @ t0
    return T


def read_scannet_pairs(path: PathLike) -> list[PosePair]:
    """SuperGlue's `*_pairs_with_gt.txt`: per line `name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)`.

    K0, K1 are row-major 3x3 for the full images; T_0to1 is a row-major 4x4. rot0/rot1 (EXIF-like
    quarter turns the images would need) must be 0: rotated pairs are rejected, not corrected.
    """
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 38:
            raise ValueError(f"{path}:{number}: expected 38 fields, got {len(fields)}")
        if fields[2:4] != ["0", "0"]:
            raise ValueError(f"{path}:{number}: rotated pairs (rot0, rot1 = {fields[2:4]}) "
                             "are not supported")
        values = np.array(fields[4:], dtype=np.float64)
        pairs.append(PosePair(fields[0], fields[1], values[:9].reshape(3, 3),
                              values[9:18].reshape(3, 3), values[18:].reshape(4, 4)))
    return pairs


def pose_pairs(name: str) -> list[PosePair]:
    """The relative-pose pairs of a dataset; image names are files under `<dataset>/images/`.

    - 'superglue_scannet_sample': the 15 pairs of its pairs file;
    - 'strecha_fountain_P11': all 55 pairs i < j of the 11 cameras.
    """
    if name == "superglue_scannet_sample":
        return read_scannet_pairs(dataset_path(name) / "scannet_sample_pairs_with_gt.txt")
    if name == "strecha_fountain_P11":
        cameras = strecha_cameras(name)
        return [PosePair(a, b, cameras[a].K, cameras[b].K, relative_pose(cameras[a], cameras[b]))
                for a, b in itertools.combinations(sorted(cameras), 2)]
    raise ValueError(f"{name!r} has no pose ground truth; use 'superglue_scannet_sample' or "
                     "'strecha_fountain_P11'")

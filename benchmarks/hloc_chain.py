"""The baseline of `benchmarks/speed.py`'s sfm rows: an image folder reconstructed the way
hloc's scripts chain it, with the reference models and pycolmap, none of matchlab's pipeline.

    extract   image by image: cv2 read, resize (INTER_AREA) to the long side, the reference
              extractor, keypoints scaled back to the original pixels, features.h5
    pairs     exhaustive
    match     pair by pair: both feature sets read from features.h5, the reference matcher,
              matches0 written to matches.h5 under "name0/name1"
    database  pycolmap: import_images (one SIMPLE_RADIAL camera per image, CameraMode.AUTO),
              keypoints + 0.5, matches, verify_matches (20,000 trials, inlier ratio >= 0.1,
              hloc's setting)
    map       incremental_mapping on min(cores, 16) threads, the largest model

The reference models (`reference_models`): the official SuperPoint and SuperGlue code from a
folder the user gives (see speed.py), or kornia's DISK and LightGlue. Only matchlab's weight
files (`matchlab.weights.load_checkpoint`) and the image list are shared with matchlab.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import h5py
import numpy as np
import torch

# (image [1, C, H, W] float in [0, 1]) -> (keypoints [N, 2], scores [N], descriptors [N, D])
ExtractFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
# ({keypoints0, scores0, descriptors0 [N, D], image_size0 (w, h), ...1}) -> matches0 [N0]
MatchFn = Callable[[dict], torch.Tensor]


@contextlib.contextmanager
def safe_torch_load():
    """torch.load with weights_only=True while the official code loads its checkpoints."""
    original = torch.load
    torch.load = functools.partial(original, weights_only=True)
    try:
        yield
    finally:
        torch.load = original


def import_official(folder: Path, name: str):
    """The module `name`.py of the user's official code folder."""
    path = folder / f"{name}.py"
    if not path.is_file():
        raise SystemExit(f"--official {folder}: {path.name} not found (give the folder that "
                         f"holds superpoint.py, superglue.py and weights/)")
    spec = importlib.util.spec_from_file_location(f"official_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class ReferenceModels:
    extract: ExtractFn
    match: MatchFn
    grayscale: bool


def reference_models(kind: str, official: Path | None, max_keypoints: int) -> ReferenceModels:
    """kind "superpoint+superglue": the official code in `official` (outdoor weights, 100
    Sinkhorn iterations, threshold 0.2); "disk+lightglue": kornia's DISK and LightGlue
    (adaptive depth and width, its defaults)."""
    if kind == "superpoint+superglue":
        with safe_torch_load():
            sp = import_official(official, "superpoint").SuperPoint(
                {"nms_radius": 4, "keypoint_threshold": 0.005,
                 "max_keypoints": max_keypoints, "device": "cpu"}).eval()
            sg = import_official(official, "superglue").SuperGlue(
                {"weights": "outdoor", "sinkhorn_iterations": 100,
                 "match_threshold": 0.2, "device": "cpu"}).eval()

        def extract(image):
            out = sp({"image": image})
            return out["keypoints"][0], out["scores"][0], out["descriptors"][0].t()

        def match(d):
            data = {}
            for i in "01":
                w, h = d[f"image_size{i}"]
                data.update({f"image{i}": torch.empty(1, 1, h, w),
                             f"keypoints{i}": d[f"keypoints{i}"][None],
                             f"scores{i}": d[f"scores{i}"][None],
                             f"descriptors{i}": d[f"descriptors{i}"].t()[None]})
            return sg(data)["matches0"][0]

        return ReferenceModels(extract, match, grayscale=True)
    if kind == "disk+lightglue":
        import kornia.feature as KF

        from matchlab.matchers.lightglue import official_state_dict
        from matchlab.weights import load_checkpoint

        disk = KF.DISK(desc_dim=128)
        state = load_checkpoint("disk_depth-save.pth")
        disk.load_state_dict(state.get("extractor", state))
        disk.eval()
        lightglue = KF.LightGlue(features=None, input_dim=128)
        lightglue.load_state_dict(official_state_dict(load_checkpoint("disk_lightglue.pth")),
                                  strict=False)
        lightglue.eval()

        def extract(image):
            f = disk(image, n=max_keypoints, window_size=5, score_threshold=0.0,
                     pad_if_not_divisible=True)[0]
            return f.keypoints, f.detection_scores, f.descriptors

        def match(d):
            sides = {f"image{i}": {"keypoints": d[f"keypoints{i}"][None],
                                   "descriptors": d[f"descriptors{i}"][None],
                                   "image_size": torch.tensor([d[f"image_size{i}"]])}
                     for i in "01"}
            return lightglue(sides)["matches0"][0]

        return ReferenceModels(extract, match, grayscale=False)
    raise ValueError(f"unknown reference chain {kind!r}")


def _load(path: Path, grayscale: bool, long_side: int) -> tuple[torch.Tensor, float]:
    """(image [1, C, h, w] in [0, 1], scale original / resized)."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read {path}")
    if not grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (round(w * scale), round(h * scale)),
                           interpolation=cv2.INTER_AREA)
    tensor = torch.from_numpy(image).float() / 255
    tensor = tensor[None, None] if grayscale else tensor.permute(2, 0, 1)[None]
    return tensor, max(h, w) / max(tensor.shape[-2:])


def run_chain(models: ReferenceModels, image_dir: Path, names: list[str], work: Path,
              long_side: int) -> dict:
    """Reconstruct image_dir/names into work (empty); returns seconds per stage, the
    registered images and the 3D points of the largest model."""
    import pycolmap

    pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, 1)  # as matchlab's
    work.mkdir(parents=True, exist_ok=True)
    seconds = {}
    start = time.perf_counter()
    with torch.inference_mode(), h5py.File(work / "features.h5", "w") as f:
        for name in names:
            image, scale = _load(image_dir / name, models.grayscale, long_side)
            keypoints, scores, descriptors = models.extract(image)
            group = f.create_group(name)
            group["keypoints"] = ((keypoints + 0.5) * scale - 0.5).numpy()
            group["scores"] = scores.numpy()
            group["descriptors"] = descriptors.t().numpy()  # hloc: [D, N]
            group["image_size"] = np.array(image.shape[-2:][::-1]) * scale
    seconds["extract"] = time.perf_counter() - start

    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    start = time.perf_counter()
    with torch.inference_mode(), h5py.File(work / "features.h5", "r") as f, \
            h5py.File(work / "matches.h5", "w") as m:
        for a, b in pairs:
            data = {}
            for i, name in zip("01", (a, b)):
                g = f[name]
                data.update({f"keypoints{i}": torch.from_numpy(g["keypoints"][()]),
                             f"scores{i}": torch.from_numpy(g["scores"][()]),
                             f"descriptors{i}": torch.from_numpy(g["descriptors"][()]).t(),
                             f"image_size{i}": tuple(round(v) for v in g["image_size"][()])})
            matches0 = models.match(data)
            group = m.require_group(a).create_group(b)
            group["matches0"] = matches0.numpy().astype(np.int32)
    seconds["match"] = time.perf_counter() - start

    start = time.perf_counter()
    database = work / "database.db"
    with pycolmap.Database.open(database):
        pass
    pycolmap.import_images(database, image_dir, pycolmap.CameraMode.AUTO, image_names=names,
                           options=pycolmap.ImageReaderOptions(camera_model="SIMPLE_RADIAL"))
    with pycolmap.Database.open(database) as db, h5py.File(work / "features.h5", "r") as f, \
            h5py.File(work / "matches.h5", "r") as m:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        for name in names:
            db.write_keypoints(ids[name], f[name]["keypoints"][()].astype(np.float32) + 0.5)
        for a, b in pairs:
            m0 = m[a][b]["matches0"][()]
            valid = np.flatnonzero(m0 > -1)
            db.write_matches(ids[a], ids[b], np.stack([valid, m0[valid]], 1).astype(np.uint32))
    (work / "pairs.txt").write_text("".join(f"{a} {b}\n" for a, b in pairs))
    pycolmap.verify_matches(database, work / "pairs.txt", options={
        "ransac": {"max_num_trials": 20000, "min_inlier_ratio": 0.1}})
    seconds["database"] = time.perf_counter() - start  # import + verification, as matchlab's
    start = time.perf_counter()
    models_dir = work / "models"
    models_dir.mkdir()
    reconstructions = pycolmap.incremental_mapping(
        database, image_dir, models_dir, options={"num_threads": min(os.cpu_count() or 1, 16)})
    seconds["map"] = time.perf_counter() - start
    best = max(reconstructions.values(), key=lambda r: r.num_reg_images(), default=None)
    return {"seconds": seconds,
            "registered": 0 if best is None else int(best.num_reg_images()),
            "points": 0 if best is None else int(best.num_points3D())}

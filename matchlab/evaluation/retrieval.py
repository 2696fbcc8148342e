"""Retrieval benchmarks: Recall@k / mAP of global descriptors on a labelled mix of the sample
datasets, and SfM from retrieval pairs against SfM from exhaustive pairs.

Labelled mix (`labelled_mix`): every image of a scene is a positive for the other images of
that scene, everything else is a negative. Scenes (names are 'dataset/path'):
  sacre_coeur          hloc_sacre_coeur/mapping (10) + lightglue_assets/sacre_coeur{1,2}.jpg
  fountain_P11         strecha_fountain_P11/images (11)
  <landmark>           superglue_phototourism_sample: the filename prefix (london_bridge,
                       piazza_san_marco, st_pauls_cathedral, united_states_capitol)
  freiburg             superglue_freiburg_sequence (17 frames of one office)
  graf                 oxford_graf (6 views of one wall)
  maupertuis           kapture_maupertuis_colmap/images (4)
  lightglue_DSC        lightglue_assets/DSC_0410.JPG, DSC_0411.JPG
  scannet <scene>      superglue_scannet_sample: the 'sceneXXXX_00' prefix (15 scenes x 2 frames)
  evd <name>           evd: 1/<name>.png and 2/<name>.png (15 extreme-viewpoint pairs)
  vpr_toy q1 / q3      vpr_toy_gmberton has no labels; two query/database pairs that show the
                       same building (q1 = db2, q3 = db11, checked by eye) are scenes, and the
                       database images are distractors (never queries, negatives for all). The
                       queries q2, q4, q5 (whose match is unsure) are left out.
Each labelled image is a query against all other images (leave-one-out): Recall@k is the
fraction of queries with a positive among the k most similar, AP the average precision of the
full ranking; mAP its mean. Means are also given per dataset.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["MixImage", "labelled_mix", "retrieval_metrics", "evaluate_retrieval",
           "evaluate_sfm_pairs", "MIX_DATASETS"]

MIX_DATASETS = ("hloc_sacre_coeur", "lightglue_assets", "strecha_fountain_P11",
                "superglue_phototourism_sample", "superglue_freiburg_sequence", "oxford_graf",
                "kapture_maupertuis_colmap", "superglue_scannet_sample", "evd",
                "vpr_toy_gmberton")
_VPR_TOY_SCENES = {"queries/q1.jpg": "vpr_toy q1", "database/db2.jpg": "vpr_toy q1",
                   "queries/q3.jpg": "vpr_toy q3", "database/db11.jpg": "vpr_toy q3"}
_IMAGE = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class MixImage:
    name: str          # 'dataset/relative/path', relative to the datasets root
    dataset: str
    label: str | None  # scene; None = distractor (a negative for every query, never a query)


def _label(dataset: str, rel: str) -> str | None | bool:
    """Scene of one file of `dataset`; None = distractor; False = not part of the mix."""
    base = rel.rsplit("/", 1)[-1]
    if dataset == "hloc_sacre_coeur":
        return "sacre_coeur" if rel.startswith("mapping/") else False
    if dataset == "lightglue_assets":
        return "sacre_coeur" if base.startswith("sacre_coeur") else "lightglue_DSC"
    if dataset == "strecha_fountain_P11":
        return "fountain_P11" if rel.startswith("images/") else False
    if dataset == "superglue_phototourism_sample":
        match = re.match(r"(.+?)_\d+_\d+\.jpg$", base)
        return match.group(1) if match else False
    if dataset == "superglue_freiburg_sequence":
        return "freiburg"
    if dataset == "oxford_graf":
        return "graf"
    if dataset == "kapture_maupertuis_colmap":
        return "maupertuis" if rel.startswith("images/") else False
    if dataset == "superglue_scannet_sample":
        return "scannet " + base.split("_frame")[0]
    if dataset == "evd":
        return f"evd {Path(base).stem}" if rel.split("/")[0] in ("1", "2") else False
    if dataset == "vpr_toy_gmberton":
        if rel in _VPR_TOY_SCENES:
            return _VPR_TOY_SCENES[rel]
        return None if rel.startswith("database/") else False
    raise ConfigError(f"{dataset!r} is not part of the labelled mix; known: {MIX_DATASETS}")


def labelled_mix(datasets: Sequence[str] = MIX_DATASETS,
                 root: str | os.PathLike | None = None) -> tuple[Path, list[MixImage]]:
    """(datasets root, images of the labelled mix sorted by name); see the module docstring.

    root: folder holding the dataset folders (default: each dataset's verified location,
    which must be one folder: the mirror `MATCHLAB_DATASETS_MIRROR` or the cache).
    """
    from ..datasets import dataset_path

    images: list[MixImage] = []
    roots = set()
    for dataset in datasets:
        folder = Path(root) / dataset if root is not None else dataset_path(dataset)
        roots.add(folder.parent)
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if not path.is_file() or not _IMAGE.search(rel) or rel.startswith("_"):
                continue
            label = _label(dataset, rel)
            if label is not False:
                images.append(MixImage(f"{dataset}/{rel}", dataset, label))
    if len(roots) != 1:
        raise ConfigError(f"the datasets lie in several folders {sorted(map(str, roots))}; "
                         f"pass root=")
    return roots.pop(), sorted(images, key=lambda im: im.name)


def retrieval_metrics(descriptors: np.ndarray, labels: Sequence[str | None],
                      ks: Sequence[int] = (1, 5, 10),
                      groups: Sequence[str] | None = None) -> dict:
    """Leave-one-out Recall@k and mAP of L2-normalised descriptors [N, D] (inner product).

    labels: scene per row (None: distractor). Queries are the rows whose scene has at least
    one other image. groups (e.g. the dataset of each row) adds per-group means.
    """
    x = np.asarray(descriptors, np.float32)
    labels = list(labels)
    n = len(labels)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    lab = np.array([lbl if lbl is not None else f"\0distractor{i}" for i, lbl in enumerate(labels)],
                   dtype=object)
    rows = []
    for i in range(n):
        if labels[i] is None:
            continue
        positive = lab == lab[i]
        positive[i] = False
        if not positive.any():
            continue
        order = np.argsort(-sim[i], kind="stable")[:n - 1]  # all others, the query is last
        hits = positive[order]
        ranks = np.nonzero(hits)[0]  # 0-based ranks of the positives
        ap = float(np.mean((np.arange(len(ranks)) + 1) / (ranks + 1)))
        rows.append({"index": i, "ap": ap, **{f"R@{k}": float(ranks[0] < k) for k in ks},
                     "group": groups[i] if groups is not None else None})

    def summary(items: list[dict]) -> dict:
        return {"queries": len(items), "mAP": float(np.mean([r["ap"] for r in items])),
                **{f"R@{k}": float(np.mean([r[f"R@{k}"] for r in items])) for k in ks}}

    result = summary(rows)
    if groups is not None:
        result["per_group"] = {g: summary([r for r in rows if r["group"] == g])
                               for g in dict.fromkeys(r["group"] for r in rows)}
    result["per_query"] = [{"index": r["index"], "ap": r["ap"], "R@1": r["R@1"] if 1 in ks
                            else None} for r in rows]
    return result


def evaluate_retrieval(method: str = "vlad", datasets: Sequence[str] = MIX_DATASETS,
                       root: str | os.PathLike | None = None, features: str = "sift",
                       resize: int | None = 1024, max_keypoints: int | None = 4096,
                       work_dir: str | os.PathLike | None = None, ks: Sequence[int] = (1, 5, 10),
                       progress: bool = True) -> dict:
    """Recall@k and mAP of a global descriptor on the labelled mix (module docstring).

    method: 'vlad' (over `features` extracted at `resize` / `max_keypoints`), 'mixvpr',
    'mixvpr:PATH' or 'auto' (as `matchlab sfm --global`). work_dir keeps the features and
    descriptors between runs (default: a temporary folder, removed afterwards).
    Returns R@k, mAP, queries, per_group (per dataset), method, timings.
    """
    import tempfile

    from ..pipeline import extract_features
    from ..registry import load_extractor
    from ..retrieval.select import compute_global_descriptors, read_global_descriptors

    root, images = labelled_mix(datasets, root)
    names = [im.name for im in images]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        timings = {}
        kind = method.split(":")[0]
        features_path = None
        if kind in ("vlad", "auto"):
            features_path = work / f"features-{features}-{resize}-{max_keypoints}.h5"
            start = time.perf_counter()
            extractor = load_extractor(features, resize=resize, max_keypoints=max_keypoints)
            extract_features(root, names, features_path, extractor, progress=progress)
            timings["extract_s"] = time.perf_counter() - start
        tag = "vlad" if kind == "vlad" else kind
        output = work / f"global-{tag}-{features}-{resize}-{max_keypoints}.h5"
        start = time.perf_counter()
        info = compute_global_descriptors(
            names, image_dir=root, output=output, method=method, features=features_path,
            vocabulary=output.with_suffix(".vocabulary.npz"), progress=progress)
        timings["global_s"] = time.perf_counter() - start
        _, descriptors = read_global_descriptors(output, names)
    result = retrieval_metrics(descriptors, [im.label for im in images], ks,
                               groups=[im.dataset for im in images])
    result.update(method=info["method"], weights=info["weights"], features=features,
                  resize=resize, max_keypoints=max_keypoints, images=len(images),
                  datasets=list(datasets), timings=timings)
    return result


_SFM_SCENES = {"sacre_coeur": ("hloc_sacre_coeur", "mapping"),
               "fountain": ("strecha_fountain_P11", "images")}


def evaluate_sfm_pairs(scene: str = "sacre_coeur", k: int = 5,
                       root: str | os.PathLike | None = None,
                       work_dir: str | os.PathLike | None = None, features: str = "sift",
                       matcher: str = "nn", global_descriptor: str = "auto",
                       reuse_features: bool = False, progress: bool = True,
                       **config) -> dict:
    """SfM from retrieval:k pairs against SfM from exhaustive pairs, with `run_sfm`.

    scene: 'sacre_coeur' (hloc_sacre_coeur, no ground truth: camera errors are measured
    against the exhaustive model) or 'fountain' (strecha_fountain_P11: against the ground-
    truth cameras, for both runs). reuse_features: the retrieval run starts from a copy of
    the exhaustive run's features.h5 and matches.h5 (its pairs are a subset), so it only
    selects pairs, builds its database and maps: faster, but its time then excludes
    extraction and matching. config: other SfMConfig fields (e.g. camera_mode).
    Returns {"exhaustive": row, "retrieval": row, "table": str}; a row has num_images,
    registered, num_pairs, median/max_error_rel (error / camera extent), median_error,
    median_rotation_error_deg (fountain), total_s, global_method.
    """
    import tempfile

    from ..pipeline import SfMConfig, run_sfm
    from ..sfm import align_and_compare, camera_centres, read_model

    if scene not in _SFM_SCENES:
        raise ConfigError(f"scene must be one of {sorted(_SFM_SCENES)}, got {scene!r}")
    dataset, sub = _SFM_SCENES[scene]
    if root is not None:
        image_dir = Path(root) / dataset / sub
    else:
        from ..datasets import dataset_path

        image_dir = dataset_path(dataset) / sub
    gt_centres = gt_rotations = None
    if scene == "fountain":
        from ..datasets import strecha_cameras

        cameras = strecha_cameras(dataset)  # R camera-to-world: x ~ K R^T (X - C)
        gt_centres = {n: c.C for n, c in cameras.items()}
        gt_rotations = {n: c.R.T for n, c in cameras.items()}
        config.setdefault("camera_mode", "single")  # one camera, no EXIF
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        for label, spec in (("exhaustive", "exhaustive"), ("retrieval", f"retrieval:{k}")):
            out = work / scene / label
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            if label == "retrieval" and reuse_features:
                for name in ("features.h5", "matches.h5"):
                    shutil.copy(work / scene / "exhaustive" / name, out / name)
            cfg = SfMConfig(features=features, matcher=matcher, pairs=spec,
                            global_descriptor=global_descriptor, **config)
            start = time.perf_counter()
            summary = run_sfm(image_dir, out, cfg, progress=progress, log=lambda m: None,
                              plots=0, report=False)
            elapsed = time.perf_counter() - start
            rec = read_model(out / "sparse")
            pairs = (out / "pairs.txt").read_text().splitlines()
            row = {"pairs": spec, "num_images": summary["num_input_images"],
                   "registered": summary["num_reg_images"], "num_pairs": len(pairs),
                   "num_points3D": summary["num_points3D"], "total_s": elapsed,
                   "global_method": None}
            if label == "retrieval":
                record = _global_record(out / "global.h5")
                row["global_method"] = record.get("method")
            if gt_centres is not None:
                reference, ref_rot = gt_centres, gt_rotations
            elif label == "exhaustive":
                reference = ref_rot = None
                exhaustive_centres = camera_centres(rec)
            else:
                reference, ref_rot = exhaustive_centres, None
            if reference is not None:
                cmp = align_and_compare(rec, reference, ref_rot)
                row.update(median_error=cmp["median_error"], max_error=cmp["max_error"],
                           median_error_rel=cmp["median_error_rel"],
                           max_error_rel=cmp["max_error_rel"],
                           error_reference="ground truth" if gt_centres else "exhaustive model")
                if "median_rotation_error_deg" in cmp:
                    row["median_rotation_error_deg"] = cmp["median_rotation_error_deg"]
            else:
                row.update(median_error=0.0, max_error=0.0, median_error_rel=0.0,
                           max_error_rel=0.0, error_reference="itself (no ground truth)")
            rows[label] = row
    return {"scene": scene, "k": k, "features": features, "matcher": matcher, **rows,
            "table": _sfm_table(scene, rows)}


def _global_record(path: Path) -> dict:
    from ..retrieval.select import GLOBAL_RECORD
    from ..store import GlobalStore

    if not path.exists():
        return {}
    with GlobalStore(path, "r") as store:
        text = store.file.attrs.get(GLOBAL_RECORD)
    return json.loads(text) if text else {}


def _sfm_table(scene: str, rows: dict) -> str:
    head = f"{'pairs':<14} {'#pairs':>6} {'registered':>10} {'med err rel':>11} " \
           f"{'max err rel':>11} {'time s':>7}  global"
    lines = [f"{scene}: camera error vs {rows['exhaustive']['error_reference']}"
             if scene == "fountain" else
             f"{scene}: camera error of the retrieval model vs the exhaustive model", head]
    for row in rows.values():
        lines.append(f"{row['pairs']:<14} {row['num_pairs']:>6} "
                     f"{row['registered']:>4} / {row['num_images']:<3} "
                     f"{row['median_error_rel']:>11.5f} {row['max_error_rel']:>11.5f} "
                     f"{row['total_s']:>7.1f}  {row['global_method'] or '-'}")
    return "\n".join(lines)

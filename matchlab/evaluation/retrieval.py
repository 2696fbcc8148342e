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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

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
    raise ValueError(f"{dataset!r} is not part of the labelled mix; known: {MIX_DATASETS}")


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
        raise ValueError(f"the datasets lie in several folders {sorted(map(str, roots))}; "
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

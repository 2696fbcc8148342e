"""Sample datasets: a registry (files, sha256, upstream sources), a verified fetcher, GT readers.

    from matchlab.datasets import dataset_path, homography_pairs
    root = dataset_path("oxford_graf")            # verified folder: the mirror in place, or the cache
    for pair in homography_pairs("oxford_graf"):  # img1 -> img2 .. img6, H maps image0 px -> image1 px
        ...

See `registry` (what is registered), `resolve` (where files come from) and `readers`
(ground-truth files). `python -m matchlab.datasets.build_manifest MIRROR` regenerates the
file list.
"""
from .readers import (Camera, HomographyPair, PosePair, homography_pairs, pose_pairs,
                      read_homography, read_scannet_pairs, read_strecha_camera, relative_pose,
                      strecha_cameras)
from .registry import DatasetError, DatasetFile, DatasetSpec, get_dataset, list_datasets
from .resolve import CACHE_ENV, MIRROR_ENV, cache_dir, dataset_path, fetch

__all__ = ["DatasetError", "DatasetFile", "DatasetSpec", "list_datasets", "get_dataset",
           "dataset_path", "fetch", "cache_dir", "MIRROR_ENV", "CACHE_ENV",
           "Camera", "HomographyPair", "PosePair", "read_homography", "homography_pairs",
           "read_strecha_camera", "strecha_cameras", "read_scannet_pairs", "relative_pose",
           "pose_pairs"]

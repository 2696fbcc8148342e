"""What travels between the driver and the workers: features as numpy arrays (Ray passes
them through its object store without pickling their data)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..types import Features


def features_to_arrays(features: Features) -> dict[str, Any]:
    """Features -> {keypoints [N, 2], descriptors [N, D], scores [N], image_size (w, h),
    lafs [N, 2, 3] or None} of numpy arrays on the CPU."""
    arrays = {k: getattr(features, k) for k in ("keypoints", "descriptors", "scores", "lafs")}
    arrays = {k: None if v is None else v.detach().cpu().numpy() for k, v in arrays.items()}
    return {**arrays, "image_size": tuple(features.image_size)}


def features_from_arrays(arrays: dict[str, Any]) -> Features:
    """The inverse of `features_to_arrays`."""
    tensors = {k: None if arrays[k] is None else torch.from_numpy(np.array(arrays[k]))
               for k in ("keypoints", "descriptors", "scores", "lafs")}
    return Features(image_size=tuple(arrays["image_size"]), **tensors)

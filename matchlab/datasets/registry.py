"""The sample datasets: what each one is, where it comes from, and which files it holds.

Two halves, joined here into one `DatasetSpec` per dataset:
  - `_SPECS` below, written by hand: description, license, kind of ground truth, and the
    upstream GitHub repository, commit and path mapping of each dataset;
  - `manifest.json` beside this file, generated from a mirror by `build_manifest.py`:
    every file's path (relative to the dataset folder), size and sha256.

A dataset folder's layout is the mirror's (`<mirror>/<name>/<path>`). Upstream, the same
file lives at `<repo>@<commit>:<remote path>`, where the remote path comes from the first
matching rule of `DatasetSpec.remote`: a rule `(local, remote)` matches a path equal to
`local`, or starting with `local` when `local` ends with '/' (the empty prefix matches all).
"""
from __future__ import annotations

import dataclasses
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError

MANIFEST = Path(__file__).with_name("manifest.json")
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/"
TREE_URL = "https://github.com/{repo}/tree/{commit}/{folder}"


@dataclass(frozen=True)
class DatasetFile:
    """One file of a dataset: `path` relative to the dataset folder, '/'-separated."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    `url_base` is the raw-file root of the upstream commit (None: mirror only); `remote` maps
    local paths to paths under it (see the module docstring); `source_url` is the upstream
    folder for people to look at. `ground_truth` names what the data can be scored against.
    """

    name: str
    description: str
    license: str
    ground_truth: str
    source_url: str | None = None
    url_base: str | None = None
    remote: tuple[tuple[str, str], ...] = ()
    files: tuple[DatasetFile, ...] = field(default=(), repr=False)

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(f.size for f in self.files)

    def remote_path(self, path: str) -> str | None:
        """Path of local file `path` inside the upstream repository (None if no rule maps it)."""
        for local, remote in self.remote:
            if path == local:
                return remote
            if path.startswith(local) and (local == "" or local.endswith("/")):
                return remote + path[len(local):]
        return None

    def file_url(self, path: str) -> str | None:
        """Download URL of local file `path` at the pinned upstream commit, or None."""
        remote = self.remote_path(path)
        if self.url_base is None or remote is None:
            return None
        return self.url_base + urllib.parse.quote(remote)


def _github(name: str, repo: str, commit: str, folder: str, description: str, license: str,
            ground_truth: str, remap: dict[str, str] | None = None) -> DatasetSpec:
    """A dataset copied from `repo`@`commit`: by default local path p is `folder/p`, and the
    copied license `_repo_license/LICENSE` is the repository's root `LICENSE`."""
    rules = (*(remap or {}).items(), ("_repo_license/LICENSE", "LICENSE"), ("", folder + "/"))
    return DatasetSpec(name, description, license, ground_truth,
                       source_url=TREE_URL.format(repo=repo, commit=commit, folder=folder),
                       url_base=RAW_URL.format(repo=repo, commit=commit), remote=rules)


_SUPERGLUE = ("magicleap/SuperGluePretrainedNetwork", "ddcf11f42e7e0732a0c4607648f9448ea8d73590")
_SUPERGLUE_LICENSE = ("Magic Leap SuperGlue license: academic/non-profit, NON-COMMERCIAL "
                      "research only")

_SPECS: list[DatasetSpec] = [
    _github("evd", "Vincentqyw/image-matching-webui", "aa4a6d0c7cdc9533f79dae1060d87b13e3b6e84f",
            "imcui/datasets/wxbs_benchmark/.EVD/EVD",
            "Extreme View Dataset (Mishkin et al.): 15 extreme-viewpoint pairs 1/NAME.png -> "
            "2/NAME.png with homographies h/NAME.txt (image 1 px -> image 2 px)",
            "repo Apache-2.0; dataset authors' terms not stated; cite Mishkin et al., MODS, "
            "CVIU 2015", "homography"),
    _github("hloc_sacre_coeur", "cvg/Hierarchical-Localization",
            "c13273bd0ecc2917a35910fd843712a1c6243193", "datasets/sacre_coeur",
            "hloc demo: 10 Sacre-Coeur photos (mapping/*.jpg, IMC 2021 / YFCC100M subset) for "
            "an SfM smoke test (45 exhaustive pairs)",
            "repo Apache-2.0; photos keep their Flickr/YFCC terms", "none"),
    _github("kapture_maupertuis_colmap", "naver/kapture", "5abafb9d56f91d8ab33917e1c8b646da2731b30f",
            "samples/maupertuis/colmap",
            "kapture sample: 4 images 1919x1079, a COLMAP text model (reconstruction/) and "
            "colmap.db with SIFT keypoints and matches",
            "BSD-3-Clause (kapture)", "COLMAP model (SfM output, not ground truth)"),
    _github("lightglue_assets", "cvg/LightGlue", "1fd587b6f5a7a0befd31188f1e5d2f05740006d7",
            "assets",
            "LightGlue's README pairs: sacre_coeur1/2.jpg and DSC_0410/0411.JPG",
            "repo Apache-2.0; photo provenance not stated", "none"),
    _github("oxford_graf", "ducha-aiki/affnet", "da7cf51ba09cb92e3cf0f46c12a89881f79e5051",
            "test-graf",
            "Oxford VGG Graffiti sequence: img1..img6.png (800x640) with homographies H1to2p.."
            "H1to6p (img1 px -> imgN px), increasing viewpoint change",
            "affnet repo MIT; images Mikolajczyk et al. 2005, academic use, cite",
            "homography"),
    _github("strecha_fountain_P11", "openMVG/SfM_quality_evaluation",
            "348a981ef51112e9848acfb20004f4ed6fbc6ce3",
            "Benchmarking_Camera_Calibration_2008/fountain-P11",
            "Strecha et al. CVPR 2008 fountain-P11: 11 images 3072x2048 with metric ground-truth "
            "cameras gt_dense_cameras/NNNN.jpg.camera (55 pairs)",
            "none stated; EPFL CVLab data, cite Strecha et al. CVPR 2008", "pose",
            remap={"Readme.txt": "Readme.txt"}),
    _github("superglue_freiburg_sequence", *_SUPERGLUE, "assets/freiburg_sequence",
            "SuperGlue demo: 17 consecutive 640x480 frames of TUM RGB-D fr3/long_office_household",
            _SUPERGLUE_LICENSE + "; TUM RGB-D data CC BY 4.0", "none"),
    _github("superglue_phototourism_sample", *_SUPERGLUE, "assets/phototourism_sample_images",
            "SuperGlue demo: 13 photos of 4 landmarks (label = filename prefix), 7 pairs in "
            "phototourism_sample_pairs.txt, no poses",
            _SUPERGLUE_LICENSE + "; images from IMC / YFCC (Flickr)", "none",
            remap={"images/": "assets/phototourism_sample_images/",
                   "phototourism_sample_pairs.txt": "assets/phototourism_sample_pairs.txt"}),
    _github("superglue_scannet_sample", *_SUPERGLUE, "assets/scannet_sample_images",
            "SuperGlue demo: 15 wide-baseline ScanNet pairs (1296x968) with K0, K1 and T_0to1 in "
            "scannet_sample_pairs_with_gt.txt",
            _SUPERGLUE_LICENSE + "; ScanNet Terms of Use (non-commercial)", "pose",
            remap={"images/": "assets/scannet_sample_images/",
                   "scannet_sample_pairs_with_gt.txt": "assets/scannet_sample_pairs_with_gt.txt"}),
    _github("vpr_toy_gmberton", "gmberton/VPR-methods-evaluation",
            "adbb6e2345daeb667aa56ccff4f161082d3d8e61", "toy_dataset",
            "Unlabelled VPR toy set: 17 database and 5 query images (retrieval smoke test)",
            "MIT (VPR-methods-evaluation); image provenance not stated", "none"),
]


def _load(manifest: Path = MANIFEST) -> dict[str, DatasetSpec]:
    listed = json.loads(manifest.read_text())["datasets"]
    specs = {}
    for spec in _SPECS:
        files = tuple(DatasetFile(p, int(s), h) for p, s, h in listed.get(spec.name, []))
        specs[spec.name] = dataclasses.replace(spec, files=files)
    return specs


DATASETS: dict[str, DatasetSpec] = _load()


def list_datasets() -> list[DatasetSpec]:
    """Every registered dataset, sorted by name."""
    return [DATASETS[name] for name in sorted(DATASETS)]


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as `name`; DatasetError listing the registered names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; registered: "
                           f"{', '.join(sorted(DATASETS))}") from None

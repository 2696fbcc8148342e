"""hloc's layout of features.h5, matches.h5 and global.h5: the stores users read and write.

Files written here are read by hloc unchanged, and files written by hloc (or by any tool using
its layout) are read here:

features.h5   one group per image name ('db/1.jpg' -> nested groups 'db' -> '1.jpg'):
              keypoints [N, 2] float32 (original-image pixels, (0, 0) = centre of the top-left
              pixel), descriptors [D, N] (hloc's transposed layout), scores [N], image_size
              (W, H) int64; with affine frames also lafs [N, 2, 3] float32, scales [N] (px) and
              oris [N] (DEGREES, as hloc's SIFT writes them; attribute units="degrees").
              Detection scores are written as `scores` (hloc's SuperPoint name, the one hloc's
              SuperGlue needs); `keypoint_scores` (hloc's DISK / ALIKED name) is read too.
              `as_half=True` stores descriptors and scores as float16; keypoints and frames
              stay float32 (hloc also halves keypoints: 2 px steps above x = 2048).
matches.h5    group `names_to_pair(n0, n1)` = 'n0/n1' with '/' inside names replaced by '-':
              matches0 [N0] int32 (index in image 1 or -1) and matching_scores0 [N0]. hloc writes
              int16, which wraps for indices >= 32768; such files are unwrapped on read (exact
              below 65535 keypoints). The old '_' separator is read too. A pair is stored once:
              (n1, n0) counts as present for (n0, n1) and reads back flipped.
global.h5     one group per image name holding global_descriptor [D].

Crash safety and clear errors come from `h5safe.Store`; `salvage` repairs damaged files.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import h5py
import numpy as np
import torch
from torch import Tensor

from ..errors import MissingItemError, ShapeError, StoreError
from ..types import Features, Matches
from .h5safe import Store


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's key of a pair in matches.h5: '/' inside names becomes '-', joined by `separator`."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def names_to_pair_old(name0: str, name1: str) -> str:
    """The key older hloc versions wrote (and hloc's README still documents): '_' separator."""
    return names_to_pair(name0, name1, separator="_")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/") \
            or any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"invalid image name {name!r}: use a relative path such as 'db/1.jpg'")
    return name


def _to_numpy(x: Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


class _ImageStore(Store):
    """Items keyed by image name (nested groups for names with '/')."""

    def names(self) -> list[str]:
        """Sorted names of the images with a complete entry."""
        return self._walk()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._item(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _get(self, name: str) -> h5py.Group:
        group = self._item(name)
        if group is None:
            raise MissingItemError(f"image {name!r} is not in {self.path}")
        return group


class FeatureStore(_ImageStore):
    """features.h5 in hloc's layout. `mode='a'` reads and writes (creating the file if
    needed), `mode='r'` only reads (and lets other readers open the file at the same time).

        with FeatureStore("features.h5") as store:
            store.write("db/1.jpg", features)     # skipped (returns False) if already there
            features = store.read("db/1.jpg")
    """

    item_dataset = "keypoints"

    def write(self, name: str, features: Features, as_half: bool = False,
              overwrite: bool = False) -> bool:
        """Store `features` under `name`; False (and nothing written) if already present."""
        _check_name(name)
        if not isinstance(features, Features):
            raise TypeError(f"expected Features, got {type(features).__name__}")
        floats = np.float16 if as_half else np.float32
        data: dict = {
            "keypoints": _to_numpy(features.keypoints, np.float32),
            "descriptors": _to_numpy(features.descriptors, floats).T,
            "scores": _to_numpy(features.scores, floats),
            "image_size": np.asarray(features.image_size, dtype=np.int64),
        }
        if not np.isfinite(data["keypoints"]).all():
            raise ShapeError(f"keypoints of {name!r} are not all finite (NaN or inf); "
                             f"they would make every later stage wrong")
        if features.lafs is not None:
            from ..geometry.laf import scale_ori_from_lafs

            lafs = features.lafs.detach().cpu().float()
            scales, oris = scale_ori_from_lafs(lafs)
            data["lafs"] = lafs.numpy()
            data["scales"] = (scales.numpy().astype(np.float32), {"units": "pixels"})
            data["oris"] = (np.rad2deg(oris.numpy()).astype(np.float32), {"units": "degrees"})
        return self._write_item(name, data, overwrite)

    def read(self, name: str) -> Features:
        """The Features stored under `name` (float32, descriptors [N, D])."""
        group = self._get(name)
        keypoints = self._keypoints(group, name)
        n = len(keypoints)
        descriptors = self._read(group, "descriptors") if "descriptors" in group \
            else np.zeros((0, n), np.float32)
        if descriptors.ndim != 2:
            raise StoreError(f"{self.path}: {name!r} has descriptors of shape {descriptors.shape}")
        if descriptors.shape[1] != n and descriptors.shape[0] == n:
            pass  # stored [N, D] by a non-hloc writer
        elif descriptors.shape[1] == n:
            descriptors = descriptors.T  # hloc's [D, N]
        else:
            raise StoreError(f"{self.path}: {name!r} has {n} keypoints but descriptors of shape "
                             f"{descriptors.shape}")
        for key in ("scores", "keypoint_scores"):
            if key in group:
                scores = self._read(group, key).astype(np.float32).reshape(-1)
                break
        else:
            scores = np.ones(n, np.float32)
        if "image_size" not in group:
            raise StoreError(f"{self.path}: {name!r} has no image_size (W, H); every hloc "
                             f"extractor writes one, so the file was made by another tool")
        image_size = tuple(int(v) for v in self._read(group, "image_size").reshape(-1)[:2])
        lafs = None
        if "lafs" in group:
            lafs = torch.from_numpy(self._read(group, "lafs").astype(np.float32).reshape(-1, 2, 3))
        elif "scales" in group and "oris" in group:
            from ..geometry.laf import lafs_from_scale_ori

            oris = self._read(group, "oris").astype(np.float64).reshape(-1)
            if group["oris"].attrs.get("units", "degrees") != "radians":
                oris = np.deg2rad(oris)  # hloc's SIFT stores degrees
            lafs = lafs_from_scale_ori(
                torch.from_numpy(keypoints).double(),
                torch.from_numpy(self._read(group, "scales").astype(np.float64).reshape(-1)),
                torch.from_numpy(oris)).float()
        try:
            return Features(
                keypoints=torch.from_numpy(keypoints),
                descriptors=torch.from_numpy(np.ascontiguousarray(descriptors, np.float32)),
                scores=torch.from_numpy(scores), image_size=image_size, lafs=lafs)
        except ShapeError as e:
            raise StoreError(f"{self.path}: {name!r} is inconsistent: {e}") from None

    def read_keypoints(self, name: str) -> np.ndarray:
        """Keypoints [N, 2] float32 of `name`, without reading its descriptors."""
        return self._keypoints(self._get(name), name)

    def _keypoints(self, group: h5py.Group, name: str) -> np.ndarray:
        """Keypoints [N, 2] float32; StoreError naming the image when any is NaN or infinite."""
        keypoints = self._read(group, "keypoints").astype(np.float32).reshape(-1, 2)
        bad = int(np.count_nonzero(~np.isfinite(keypoints).all(axis=1)))
        if bad:
            raise StoreError(f"{self.path}: image {name!r} has {bad} of {len(keypoints)} "
                             f"keypoints that are not finite (NaN or inf); they cannot be "
                             f"matched. Extract that image's features again.")
        return keypoints

    def num_keypoints(self, name: str) -> int:
        return int(self._get(name)["keypoints"].shape[0])


class GlobalStore(_ImageStore):
    """global-feats.h5 in hloc's layout: one `global_descriptor` [D] per image name."""

    item_dataset = "global_descriptor"

    def write(self, name: str, descriptor: Tensor | np.ndarray, as_half: bool = False,
              overwrite: bool = False) -> bool:
        _check_name(name)
        array = _to_numpy(descriptor, np.float16 if as_half else np.float32)
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 1:
            raise ShapeError(f"global descriptor of {name!r} must be [D], got {array.shape}")
        return self._write_item(name, {"global_descriptor": array}, overwrite)

    def read(self, name: str) -> Tensor:
        """The descriptor [D] float32 of `name`."""
        array = self._read(self._get(name), "global_descriptor")
        return torch.from_numpy(array.astype(np.float32).reshape(-1))

    def read_many(self, names: Iterable[str]) -> Tensor:
        """Descriptors [len(names), D] float32, in the order given."""
        rows = [self.read(n) for n in names]
        if not rows:
            return torch.zeros((0, 0))
        return torch.stack(rows)


KEYPOINTS_ATTRS = ("keypoints_digest0", "keypoints_digest1")  # attributes of a pair's group


class MatchStore(Store):
    """matches.h5 in hloc's layout.

        with MatchStore("matches.h5") as store:
            store.write("a.jpg", "b.jpg", matches)   # skipped if (a, b) or (b, a) is there
            idx, scores = store.read_pairs("b.jpg", "a.jpg")   # flipped: [M, 2] (i_b, i_a)
    """

    item_dataset = "matches0"

    def _find(self, name0: str, name1: str) -> tuple[h5py.Group, bool] | None:
        """(group, reversed) for the pair in either order, with either separator (as hloc)."""
        for key, flipped in ((names_to_pair(name0, name1), False),
                             (names_to_pair(name1, name0), True),
                             (names_to_pair_old(name0, name1), False),
                             (names_to_pair_old(name1, name0), True)):
            group = self._item(key)
            if group is not None:
                return group, flipped
        return None

    def item_group(self, item) -> h5py.Group | None:
        """The group of the pair `item` = (name0, name1), stored in either order."""
        if isinstance(item, str):
            return self._item(item)
        found = self._find(*item)
        return None if found is None else found[0]

    def __contains__(self, pair: object) -> bool:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return False
        return self._find(*pair) is not None

    def write(self, name0: str, name1: str, matches: Matches, as_half: bool = False,
              overwrite: bool = False, keypoints: tuple[str, str] | None = None) -> bool:
        """Store matches image0 -> image1; False (nothing written) if the pair is present in
        either order. With overwrite=True an existing entry (in either order) is replaced.

        keypoints: digests (`identity.keypoints_digest`) of the keypoints of image0 and image1
        that were matched, kept with the pair so that matches of other keypoints are noticed."""
        _check_name(name0)
        _check_name(name1)
        if not isinstance(matches, Matches):
            raise TypeError(f"expected Matches, got {type(matches).__name__}")
        found = self._find(name0, name1)
        if found is not None:
            if not overwrite:
                return False
            self._require_writable()
            del self.file[found[0].name]
            self.file.flush()
        m0 = matches.matches0.detach().cpu().numpy()
        if m0.size and (m0.min() < -1 or m0.max() > np.iinfo(np.int32).max):
            raise ShapeError(f"matches0 of ({name0!r}, {name1!r}) has values outside "
                             f"[-1, 2^31): min {m0.min()}, max {m0.max()}")
        data = {"matches0": m0.astype(np.int32),
                "matching_scores0": _to_numpy(matches.scores0,
                                              np.float16 if as_half else np.float32)}
        attrs = dict(zip(KEYPOINTS_ATTRS, keypoints)) if keypoints is not None else None
        return self._write_item(names_to_pair(name0, name1), data, overwrite=True, attrs=attrs)

    def keypoints_digests(self, name0: str, name1: str) -> tuple[str, str] | None:
        """The keypoints digests of (name0, name1) stored with the pair (flipped when the file
        holds it as (name1, name0)); None when the pair or its digests are absent (files made
        by other tools or by older matchlab versions)."""
        found = self._find(name0, name1)
        if found is None:
            return None
        group, flipped = found
        try:
            digests = tuple(str(group.attrs[key]) for key in KEYPOINTS_ATTRS)
        except (KeyError, OSError):
            return None
        return digests[::-1] if flipped else digests

    def read_pairs(self, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
        """(idx [M, 2] int64 with columns (index in name0, index in name1), scores [M] float32),
        sorted by the first column; flipped when the file holds the pair as (name1, name0)."""
        return self._read_pairs(name0, name1, scores=True)

    def read_indices(self, name0: str, name1: str) -> np.ndarray:
        """`read_pairs`'s idx [M, 2] alone (the scores are not read)."""
        return self._read_pairs(name0, name1, scores=False)[0]

    def _read_pairs(self, name0: str, name1: str, scores: bool
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        found = self._find(name0, name1)
        if found is None:
            raise MissingItemError(
                f"pair ({name0!r}, {name1!r}) is not in {self.path} (looked for "
                f"{names_to_pair(name0, name1)!r}, {names_to_pair(name1, name0)!r} and their "
                f"old '_'-separated forms)")
        group, flipped = found
        m0 = self._read(group, "matches0").reshape(-1)
        if m0.dtype == np.int16:  # hloc's .short(): indices 32768..65534 wrapped to negatives
            m0 = m0.astype(np.int64)
            m0[m0 < -1] += 1 << 16
        m0 = m0.astype(np.int64)
        valid = np.nonzero(m0 > -1)[0]
        idx = np.stack([valid, m0[valid]], -1).astype(np.int64).reshape(-1, 2)
        s0 = None
        if scores and "matching_scores0" in group:
            s0 = self._read(group, "matching_scores0").astype(np.float32).reshape(-1)[valid]
        elif scores:
            s0 = np.ones(len(valid), np.float32)
        if flipped:
            idx = idx[:, ::-1]
            order = np.argsort(idx[:, 0], kind="stable")
            idx, s0 = idx[order], (None if s0 is None else s0[order])
        return np.ascontiguousarray(idx), (None if s0 is None else np.ascontiguousarray(s0))

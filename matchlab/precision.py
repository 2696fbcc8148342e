"""The `precision` option of every extractor and matcher, and where bfloat16 is native.

    precision = "auto" | "float32" | "bfloat16" (| "float16" where a model offers it)

A model computes its heavy layers (convolutions, attention matmuls) in the chosen dtype; the
numerically sensitive parts stay float32 whatever it is: softmax / log-sum-exp / Sinkhorn,
score maps, non-maximum suppression and detection thresholds, sub-pixel refinement, the
returned keypoints, descriptors and scores. Reduced precision changes results (slightly), so
`precision` is NOT a result-neutral option: output files record the dtype it resolved to.

"auto" picks bfloat16 only where both hold:
- the device computes bfloat16 natively: a CUDA GPU with `torch.cuda.is_bf16_supported()`,
  or a CPU with AVX512-BF16 or AMX-BF16 (the `avx512_bf16` / `amx_bf16` flags of
  /proc/cpuinfo; elsewhere torch's own check); on other CPUs bfloat16 is emulated and slower
  than float32;
- the model is in `AUTO_BFLOAT16`: its accuracy in bfloat16 was measured with `matchlab eval`
  and found equal to float32 within the run-to-run noise (docs/results.md, "Precision").
Otherwise "auto" is float32 (a model may keep an older rule on CUDA, e.g. LightGlue float16).
The environment variable MATCHLAB_AUTO_PRECISION=float32 makes "auto" float32 everywhere
(results that do not depend on the hardware; the test suite sets it).
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from .errors import ConfigError
from .registry import Configurable

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}

# Models whose "auto" is bfloat16 on hardware with native bfloat16 (class names), with the
# measurement that admitted them (docs/results.md, table "precision": `matchlab eval`
# homography + pose, float32 -> bfloat16, LO-RANSAC AUC@5). Rule: Strecha (55 pairs) AUC@5
# within 1 point and precision within 0.5 point, and the small sets (graf 5, EVD / ScanNet 15
# pairs) not all lower. A model left out stays float32 under "auto".
AUTO_BFLOAT16: dict[str, str] = {
    "SuperPoint": "Strecha 82.54 -> 82.16, P 68.8 -> 68.8; graf +5.9, EVD -3.9, ScanNet -0.7",
    "DISK": "Strecha 92.58 -> 93.45, P 79.4 -> 79.3; graf -2.0, EVD 0, ScanNet -3.0",
    "ALIKED": "Strecha 94.36 -> 94.43, P 81.7 -> 81.6; graf +0.5, EVD -0.0, ScanNet +0.2",
    "LightGlue": "Strecha 98.11 -> 98.14, P 98.1 -> 98.1; graf -0.4, EVD -0.8, ScanNet -0.4",
    # SuperGlue left out: Strecha 96.49 -> 96.67, but graf LO-RANSAC AUC@5 80.64 -> 67.51
    # (P@3px 76.3 -> 75.6), more than any other model moved, and bfloat16 saves little there
}

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
AUTO_ENV = "MATCHLAB_AUTO_PRECISION"  # "float32": "auto" is float32 whatever the hardware


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_native_bfloat16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX-BF16 instructions."""
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in _CPU_BF16_FLAGS)
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # no /proc/cpuinfo
    return bool(check and check())


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether `device` computes bfloat16 natively (CUDA: torch's check; CPU: the flags)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bfloat16()
    return False


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bfloat16'."""
    return str(dtype).removeprefix("torch.")


def autocast(device: torch.device, dtype: torch.dtype):
    """`torch.autocast` to `dtype` on `device`, or nothing for float32 (ops that autocast
    keeps in float32, such as softmax, stay there)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


class PrecisionOption(Configurable):
    """The `precision` option shared by `Extractor` and `Matcher` (see the module docstring).

    A model lists the dtypes it implements in `precisions` (float32 only by default: OpenCV
    SIFT, nearest neighbours); asking for another one is a ConfigError naming the model.
    `compute_dtype()` gives the dtype to compute in on the model's current device;
    `auto_dtype(device)` is the "auto" rule, which a model may extend.
    """

    default_conf: ClassVar[dict[str, Any]] = {"precision": "auto"}
    precisions: ClassVar[tuple[str, ...]] = ("float32",)

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        value = self.conf["precision"]
        if value != "auto" and value not in self.precisions:
            raise ConfigError(f"{type(self).__name__}: precision must be one of "
                              f"{['auto', *self.precisions]}, got {value!r}")

    @property
    def device(self) -> torch.device:
        ref = next(self.parameters(), None)
        ref = ref if ref is not None else next(self.buffers(), None)
        return ref.device if ref is not None else torch.device("cpu")

    def auto_dtype(self, device: torch.device) -> torch.dtype:
        """What "auto" means on `device`: bfloat16 for a model in `AUTO_BFLOAT16` where it is
        native, else float32."""
        name = type(self).__name__
        if "bfloat16" in self.precisions and name in AUTO_BFLOAT16 and native_bfloat16(device):
            return torch.bfloat16
        return torch.float32

    def compute_dtype(self) -> torch.dtype:
        """The dtype the heavy layers run in on the model's current device."""
        value = self.conf["precision"]
        if value != "auto":
            return DTYPES[value]
        forced = os.environ.get(AUTO_ENV, "")
        if forced not in ("", "float32"):
            raise ConfigError(f"{AUTO_ENV}={forced!r}: the only value is 'float32' (unset it "
                              f"for the hardware rule)")
        return torch.float32 if forced else self.auto_dtype(self.device)

    def record_conf(self) -> dict[str, Any]:
        """The conf as output files record it: "auto" replaced by the dtype it resolved to;
        left out for a model that computes in float32 only (it changes nothing there)."""
        conf = dict(self.conf)
        if tuple(self.precisions) == ("float32",):
            del conf["precision"]
        else:
            conf["precision"] = dtype_name(self.compute_dtype())
        return conf

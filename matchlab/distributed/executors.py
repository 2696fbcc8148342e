"""The executor contract: how a stage hands its work to other processes or machines.

A stage (`pipeline.extract_features`, `pipeline.match_pairs`, global descriptors) given an
executor keeps everything but the model's computation: it decides what is left to do, reads
inputs and writes every result itself, through the same crash-safe store as a local run (one
writer, so a rerun skips what is there and a killed driver loses only the tasks in flight).
The executor runs tasks on workers that each build the model once from a `WorkerSpec`:

    for key, result in executor.map(spec, "extract", keys, arguments):
        ...  # results arrive as they complete, in any order

`EXECUTORS` names the executors: "local" is the stages' own loop in this process (no object:
`make_executor("local")` is None), "ray" a Ray cluster (`ray_executor.RayExecutor`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

from ..errors import ConfigError

EXECUTORS: dict[str, str | None] = {
    "local": None,
    "ray": "matchlab.distributed.ray_executor:RayExecutor",
}


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker builds its model from: a registry `kind` ("extractor", "matcher" or
    "mixvpr") and `name`, and the model's full conf (picklable, `precision` resolved)."""

    kind: str
    name: str
    conf: dict = field(default_factory=dict)

    def build(self, device: str = "cpu"):
        """The model, in eval mode, on `device`."""
        module, builder = BUILDERS[self.kind].split(":")
        return getattr(importlib.import_module(module), builder)(self.name, **self.conf).to(device)


def _mixvpr(name: str, **conf: Any):
    from ..retrieval.mixvpr import MixVPR

    return MixVPR(**conf).eval()


BUILDERS = {"extractor": "matchlab.registry:load_extractor",
            "matcher": "matchlab.registry:load_matcher",
            "mixvpr": "matchlab.distributed.executors:_mixvpr"}


def worker_spec(kind: str, model) -> WorkerSpec:
    """The spec of a model made by the registry: found by its class, with the conf it was
    built with and `precision` as the dtype it resolved to here (every worker then computes
    in the dtype the output file records). ConfigError for a model the registry does not
    know (a user's own callable runs with the local executor only)."""
    from ..registry import KINDS

    path = f"{type(model).__module__}:{type(model).__name__}"
    if kind == "mixvpr":
        name = "mixvpr"
    else:
        names = [n for n, entry in KINDS[kind].items() if entry == path]
        if not names:
            raise ConfigError(f"the ray executor runs the registry's models; {path} is not "
                              f"one of them (use the local executor)")
        name = names[0]
    conf = dict(model.conf)
    if "precision" in conf and hasattr(model, "record_conf"):
        conf["precision"] = model.record_conf().get("precision", conf["precision"])
    return WorkerSpec(kind, name, conf)


class Executor(Protocol):
    """What a stage needs of an executor (see the module docstring)."""

    ship_images: bool  # workers get image bytes / features from the driver, not paths

    def map(self, spec: WorkerSpec, method: str, keys: Iterable[Any],
            arguments: Callable[[Any], tuple]) -> Iterator[tuple[Any, Any]]:
        """(key, result of worker.`method`(*arguments(key))) for every key, as tasks
        complete; `arguments` is called when the key's task is submitted (bounded memory)."""
        ...


def make_executor(name: str, **options: Any) -> Executor | None:
    """The executor registered as `name` with its options; None for "local"."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")
    if EXECUTORS[name] is None:
        return None
    module, cls = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)

"""One table from names to classes, and the configurable base of every model.

Entries are "module:Class" strings so that `import matchlab` stays light: a model's
module (and its heavy imports such as kornia) is loaded only when asked for by name.
"""
from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch

from .errors import ConfigError

EXTRACTORS: dict[str, str] = {
    "superpoint": "matchlab.extractors.superpoint:SuperPoint",
    "disk": "matchlab.extractors.disk:DISK",
    "aliked": "matchlab.extractors.aliked:ALIKED",
    "sift": "matchlab.extractors.sift:SIFT",
}

MATCHERS: dict[str, str] = {
    "nn": "matchlab.matchers.nearest:NearestNeighbor",
    "superglue": "matchlab.matchers.superglue:SuperGlue",
    "lightglue": "matchlab.matchers.lightglue:LightGlue",
    "affineglue": "matchlab.matchers.affineglue:AffineGlue",
}

KINDS = {"extractor": EXTRACTORS, "matcher": MATCHERS}


class Configurable(torch.nn.Module):
    """A torch module configured by a flat dict merged over the class's `default_conf`.

    Subclasses declare `default_conf`; options of base classes are inherited (a subclass's
    own `default_conf` entries override its bases'). Unknown keys are rejected with a
    message that lists the valid ones.
    """

    default_conf: ClassVar[dict[str, Any]] = {}
    # options that change speed or memory only, never results: output files leave them out of
    # the record they keep of the model that made them (see matchlab.pipeline.model_record)
    result_neutral_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def full_default_conf(cls) -> dict[str, Any]:
        conf: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            conf.update(klass.__dict__.get("default_conf", {}))
        return conf

    def __init__(self, **conf: Any) -> None:
        super().__init__()
        defaults = self.full_default_conf()
        unknown = sorted(set(conf) - set(defaults))
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}: unknown option(s) {unknown}; valid options are "
                + ", ".join(f"{k}={v!r}" for k, v in sorted(defaults.items())))
        self.conf = {**defaults, **conf}


def resolve(kind: str, name: str) -> type:
    """The class registered as `name` for `kind` ('extractor' or 'matcher')."""
    table = KINDS[kind]
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table))}")
    module, cls = table[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_extractor(name: str, **conf: Any):
    """An extractor by registry name, e.g. `load_extractor("superpoint", max_keypoints=1024)`."""
    return resolve("extractor", name)(**conf).eval()


def load_matcher(name: str, for_features: str | None = None, **conf: Any):
    """A matcher by registry name, e.g. `load_matcher("nn", ratio_threshold=0.8)`.

    for_features: the extractor name the features come from; a matcher whose weights depend
    on it (a `features` option, e.g. LightGlue, AffineGlue's base) gets it unless conf sets
    `features` itself: `load_matcher("lightglue", for_features="disk")`.
    """
    cls = resolve("matcher", name)
    if for_features is not None and "features" in cls.default_conf:
        conf.setdefault("features", for_features)
    return cls(**conf).eval()

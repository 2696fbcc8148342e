"""Setting nested pycolmap option objects from plain dicts, with checks.

pycolmap's pipeline options are nested objects (``IncrementalPipelineOptions.mapper`` is an
``IncrementalMapperOptions``, ``.triangulation`` an ``IncrementalTriangulatorOptions``...).
Two traps that this module removes (see shared/docs/formats-and-pycolmap.md):

* hloc's ``--mapper_options`` validates keys against ``IncrementalMapperOptions`` but sets
  them on the top level, so they fail either way. Here a key may be given
  - nested: ``{"mapper": {"abs_pose_min_num_inliers": 20}}``,
  - dotted: ``{"mapper.abs_pose_min_num_inliers": 20}``, or
  - flat: ``{"abs_pose_min_num_inliers": 20}``. A flat key that is not a top-level field is
    routed to the one nested field of that name; if several nested objects have it, the
    error lists the dotted spellings to choose from. A top-level field always wins.
* Some nested fields are silently overwritten by top-level ones when COLMAP runs
  (``IncrementalPipelineOptions::Mapper()`` copies ``num_threads``, ``random_seed``,
  ``ba_refine_focal_length`` -> ``mapper.abs_pose_refine_focal_length`` and others). Setting
  such a nested field raises `OptionsError` naming the top-level field to set instead.

Unknown keys raise `OptionsError` listing the valid ones. Enum fields accept their member
name as a string (``"image_selection_method": "MIN_UNCERTAINTY"``).
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping

from ..errors import OptionsError

__all__ = ["OptionsError", "apply_options", "option_fields"]


# Nested fields that COLMAP overwrites from top-level ones before use, per options type
# (colmap/controllers/incremental_pipeline.cc, IncrementalPipelineOptions::Mapper() and
# ::Triangulation(), COLMAP 3.13/4.x). nested path -> top-level field to set instead.
_SHADOWED: dict[str, dict[str, str]] = {
    "IncrementalPipelineOptions": {
        "mapper.abs_pose_refine_focal_length": "ba_refine_focal_length",
        "mapper.abs_pose_refine_extra_params": "ba_refine_extra_params",
        "mapper.min_focal_length_ratio": "min_focal_length_ratio",
        "mapper.max_focal_length_ratio": "max_focal_length_ratio",
        "mapper.max_extra_param": "max_extra_param",
        "mapper.num_threads": "num_threads",
        "mapper.fix_existing_frames": "fix_existing_frames",
        "mapper.constant_rigs": "constant_rigs",
        "mapper.constant_cameras": "constant_cameras",
        "mapper.random_seed": "random_seed",
        "triangulation.min_focal_length_ratio": "min_focal_length_ratio",
        "triangulation.max_focal_length_ratio": "max_focal_length_ratio",
        "triangulation.max_extra_param": "max_extra_param",
        "triangulation.random_seed": "random_seed",
    },
}


def _is_options(value: Any) -> bool:
    """pycolmap option structs expose todict() and summary()."""
    return hasattr(value, "todict") and hasattr(value, "summary") and not isinstance(value, type)


def option_fields(obj: Any) -> list[str]:
    """Public field names of a pycolmap options object (in declaration order)."""
    try:
        return list(obj.todict().keys())
    except Exception:  # pragma: no cover - fallback for odd bindings
        return [k for k in dir(obj) if not k.startswith("_") and not callable(getattr(obj, k))]


def _leaf_paths(obj: Any, prefix: str = "") -> dict[str, list[str]]:
    """leaf name -> dotted paths of nested (not top-level) fields with that name."""
    out: dict[str, list[str]] = {}
    for name in option_fields(obj):
        value = getattr(obj, name)
        if _is_options(value):
            for leaf, paths in _leaf_paths(value, f"{prefix}{name}.").items():
                out.setdefault(leaf, []).extend(paths)
        elif prefix:
            out.setdefault(name, []).append(prefix + name)
    return out


def _convert(current: Any, value: Any, path: str) -> Any:
    enum_type = type(current)
    members = getattr(enum_type, "__members__", None)
    if members is not None and isinstance(value, str):
        key = value.upper()
        if key not in members:
            raise OptionsError(f"option {path!r}: {value!r} is not one of {sorted(members)}")
        return members[key]
    return value


def _set_leaf(root: Any, path: str, value: Any) -> None:
    obj = root
    parts = path.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part)
    name = parts[-1]
    current = getattr(obj, name)
    if _is_options(current):
        if isinstance(value, Mapping):
            for key, sub in value.items():
                _apply_one(root, f"{path}.{key}", sub)
            return
        if type(value) is type(current):
            setattr(obj, name, value)
            return
        raise OptionsError(f"option {path!r} is a group of options ({type(current).__name__}); "
                           f"give a dict, got {type(value).__name__}")
    value = _convert(current, value, path)
    try:
        setattr(obj, name, value)
    except (TypeError, ValueError):
        raise OptionsError(f"option {path!r}: cannot set {value!r} of type "
                           f"{type(value).__name__}; expected a {type(current).__name__} "
                           f"like the current value {current!r}") from None


def _apply_one(root: Any, key: str, value: Any) -> None:
    root_type = type(root).__name__
    shadowed = _SHADOWED.get(root_type, {})
    parts = key.split(".")
    # Resolve the dotted path, checking every component.
    obj = root
    for i, part in enumerate(parts):
        fields = option_fields(obj)
        if part not in fields:
            where = ".".join(parts[:i]) or type(root).__name__
            if i == 0 and len(parts) == 1:
                leaves = _leaf_paths(root).get(part, [])
                if len(leaves) == 1:
                    key = leaves[0]
                    break
                if len(leaves) > 1:
                    raise OptionsError(f"option {part!r} is ambiguous in {root_type}: use one "
                                       f"of {', '.join(leaves)}")
            close = difflib.get_close_matches(part, fields, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise OptionsError(f"unknown option {part!r} in {where}{hint}; valid: "
                               f"{', '.join(fields)}")
        if i < len(parts) - 1:
            obj = getattr(obj, part)
            if not _is_options(obj):
                raise OptionsError(f"option {'.'.join(parts[:i + 1])!r} is not a group; "
                                   f"cannot set {key!r}")
    if key in shadowed:
        raise OptionsError(f"option {key!r} is overwritten by the top-level {shadowed[key]!r} "
                           f"when {root_type} runs; set {shadowed[key]!r} instead")
    _set_leaf(root, key, value)


def apply_options(obj: Any, options: Mapping[str, Any] | None) -> Any:
    """Set `options` (nested / dotted / flat keys, see module doc) on `obj` in place; return obj."""
    if options is None:
        return obj
    if not isinstance(options, Mapping):
        raise OptionsError(f"options must be a dict, got {type(options).__name__}")
    for key, value in options.items():
        if not isinstance(key, str) or not key:
            raise OptionsError(f"option keys must be non-empty strings, got {key!r}")
        _apply_one(obj, key, value)
    return obj

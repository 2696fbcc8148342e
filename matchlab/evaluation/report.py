"""Plain-text tables of `matchlab eval` results (one row per result dict, grouped by benchmark)."""
from __future__ import annotations

from typing import Sequence


def _rows(result: dict) -> tuple[list[str], list[list[str]]]:
    method, dataset = result.get("method", "?"), result["dataset"]
    if result["benchmark"] == "pose":
        head = ["method", "dataset", "estimator", "AUC@1", "AUC@2", "AUC@5", "AUC@10", "AUC@20",
                "P", "MS", "matches", "match s", "est. s"]
        rows = [[method, dataset, name, *(f"{r[f'auc@{t}deg']:.2f}" for t in (1, 2, 5, 10, 20)),
                 f"{result['precision']:.1f}", f"{result['matching_score']:.1f}",
                 f"{result['matches']:.0f}", f"{result['time_match_s']:.3f}",
                 f"{r['time_estimate_s']:.3f}"] for name, r in result["estimators"].items()]
        return head, rows
    if result["benchmark"] == "homography":
        head = ["method", "dataset", "estimator", "P@3px", "AUC@1px", "AUC@3px", "AUC@5px",
                "matches", "match s"]
        return head, [[method, dataset, result["estimator"],
                       f"{100 * result['precision@3px']:.1f}",
                       *(f"{100 * result[f'auc@{t}px']:.2f}" for t in (1, 3, 5)),
                       f"{result['matches']:.0f}", f"{result['time_match_s']:.3f}"]]
    head = ["method", "dataset", "registered", "median err m", "median %extent", "max %extent",
            "points", "time s"]
    return head, [[method, dataset, f"{result['registered']}/{result['num_images']}",
                   f"{result['median_error_m']:.4f}", f"{100 * result['median_error_rel']:.3f}",
                   f"{100 * result['max_error_rel']:.3f}", str(result["points3D"]),
                   f"{result['time_s']:.0f}"]]


def format_table(results: Sequence[dict], markdown: bool = False) -> str:
    """Tables of eval results; consecutive results of one benchmark share a table."""
    blocks, current, head = [], [], None
    for result in results:
        h, rows = _rows(result)
        if h != head and current:
            blocks.append((head, current))
            current = []
        head = h
        current += rows
    if current:
        blocks.append((head, current))
    out = []
    for head, rows in blocks:
        if markdown:
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
            out.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
            out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        out.append("")
    return "\n".join(out)

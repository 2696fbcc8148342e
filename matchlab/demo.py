"""`make demo` / `matchlab demo`: reconstruct the sacre_coeur sample scene end to end.

Ten Internet photos of the Sacre-Coeur (hloc's sample) -> features -> exhaustive pairs ->
matches -> COLMAP database -> verification -> incremental mapping, with the best configuration
we have measured (`DEMO_CONFIG`); prints the stage reports and the model summary and writes
the model, match plots and report.html into the output folder.
"""
from __future__ import annotations

import time
from pathlib import Path

from .pipeline import SfMConfig, run_sfm

# DISK + LightGlue: registers all 10 images (docs/results.md).
DEMO_CONFIG = SfMConfig(features="disk", matcher="lightglue", max_keypoints=2048)


def run_demo(output_dir: str | Path = "outputs/demo", config: SfMConfig = DEMO_CONFIG,
             device: str | None = None) -> dict:
    from .datasets import dataset_path

    image_dir = dataset_path("hloc_sacre_coeur") / "mapping"
    print(f"matchlab demo: reconstructing {image_dir} with {config.features} + {config.matcher}",
          flush=True)
    start = time.perf_counter()
    summary = run_sfm(image_dir, output_dir, config, device=device,
                      log=lambda line: print(line, flush=True))
    print(f"done in {time.perf_counter() - start:.0f} s; model, plots and report.html in "
          f"{output_dir}")
    return summary

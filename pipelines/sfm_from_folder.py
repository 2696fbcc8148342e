"""Image folder -> COLMAP model through matchlab's Python API (what `matchlab sfm` does).

    python pipelines/sfm_from_folder.py IMAGE_DIR OUTPUT_DIR [--features disk] [--matcher nn]

Each stage writes its own file in OUTPUT_DIR and skips what is already there, so re-running
after an interruption resumes. `matchlab.pipeline.run_sfm` is the same chain in one call.
"""
import argparse
from pathlib import Path

import pycolmap

from matchlab import load_extractor, load_matcher
from matchlab.images import list_images
from matchlab.pipeline import extract_features, find_duplicates, match_pairs
from matchlab.retrieval.pairs import exhaustive_pairs, write_pairs_file
from matchlab.sfm import create_database, model_summary, reconstruct, verify
from matchlab.store import FeatureStore, MatchStore

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("image_dir", type=Path)
parser.add_argument("output_dir", type=Path)
parser.add_argument("--features", default="superpoint")
parser.add_argument("--matcher", default="nn")
args = parser.parse_args()
pycolmap.logging.minloglevel = 1  # COLMAP's warnings only
out = args.output_dir
out.mkdir(parents=True, exist_ok=True)

# 1. images, minus byte-identical duplicates
names = list_images(args.image_dir)
duplicates = find_duplicates(args.image_dir, names)
names = [n for n in names if n not in duplicates]

# 2. local features (unreadable images are reported and left out)
extractor = load_extractor(args.features, resize=1024, max_keypoints=4096)
report = extract_features(args.image_dir, names, out / "features.h5", extractor)
names = [n for n in names if n not in report.failed]

# 3. pairs and matches
pairs = exhaustive_pairs(names)
write_pairs_file(out / "pairs.txt", pairs)
match_pairs(pairs, out / "features.h5", out / "matches.h5", load_matcher(args.matcher))

# 4. COLMAP database, geometric verification, incremental mapping
with FeatureStore(out / "features.h5", "r") as features:
    keypoints = {n: features.read_keypoints(n) for n in names}
with MatchStore(out / "matches.h5", "r") as matches:
    pair_matches = {(a, b): matches.read_pairs(a, b)[0] for a, b in pairs}
create_database(out / "database.db", args.image_dir, names, keypoints, pair_matches)
verify(out / "database.db", pairs)
model = reconstruct(out / "database.db", args.image_dir, out,
                    options={"random_seed": 0, "num_threads": 1}, image_names=names)

# 5. what came out (the model is in OUTPUT_DIR/sparse, sparse_text and points3D.ply)
for key, value in model_summary(model, names).items():
    print(f"{key}: {value}")
if duplicates or report.failed:
    print("skipped:", {**{n: f"duplicate of {o}" for n, o in duplicates.items()}, **report.failed})

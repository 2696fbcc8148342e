"""matchlab.sfm: plain keypoints + matches -> COLMAP database -> verification -> model.

    from matchlab.sfm import create_database, verify, reconstruct, model_summary
    create_database("out/database.db", image_dir, names, keypoints, matches)
    verify("out/database.db")                       # or verify(db, "pairs.txt")
    rec = reconstruct("out/database.db", image_dir, "out")   # out/sparse, sparse_text, PLY
    print(model_summary(rec, names))

pycolmap is imported when a function runs, not when this package is imported.
"""
from .database import (CAMERA_MODES, DatabaseError, create_database, import_verified,
                       read_image_ids)
from .verification import DEFAULT_VERIFICATION_OPTIONS, verify
from .options import OptionsError, apply_options
from .reconstruction import (MAPPERS, ReconstructionError, align_and_compare, camera_centres,
                             drop_weak_images,
                             export_model, model_summary, read_model, reconstruct)

__all__ = ["CAMERA_MODES", "DEFAULT_VERIFICATION_OPTIONS", "MAPPERS", "DatabaseError",
           "OptionsError", "ReconstructionError", "create_database", "verify", "reconstruct",
           "export_model", "read_model", "model_summary", "camera_centres",
           "align_and_compare", "apply_options", "read_image_ids", "drop_weak_images",
           "import_verified"]

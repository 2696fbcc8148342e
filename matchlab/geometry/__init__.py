"""Two-view geometry, one vocabulary:

- `primitives`: camera / rotation helpers, epipolar and homography residuals, affine
  correspondences (numpy and torch side by side, each defined once);
- `solvers`: minimal solvers from one affine correspondence, linear solvers (DLT, 8-point,
  5-point, weighted 8-point) and the two-view bundle adjustment;
- `robust`: robust estimators behind one protocol returning `matchlab.types.TwoViewGeometry`,
  one module per backend, and the name table `robust.ESTIMATORS`;
- `laf` (local affine frames) and `similarity` (Umeyama alignment).

Accuracy metrics (pose error, AUC, corner error) live in `matchlab.evaluation.metrics`.
"""

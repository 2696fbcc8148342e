"""Geometry primitives, each defined once: camera and rotation helpers (`camera`), epipolar
geometry (`epipolar`), homographies (`homography`) and affine correspondences (`affine`).
Where both are needed, the numpy and the torch version sit side by side in one module."""

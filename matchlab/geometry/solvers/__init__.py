"""Model solvers: minimal solvers from one affine correspondence (`minimal`), linear solvers
(`linear`: DLT homography, 8-point and 5-point essential matrix, the weighted 8-point in
torch) and the two-view bundle adjustment (`bundle`, torch)."""

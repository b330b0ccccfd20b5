"""River-Valley geometry: directions, slices and the measures built on curvature.

Takes in ``(loss_fn, params)`` pairs, spectra and trajectories and hands on the numbers the
paper's claims are about. Knows no file and no training loop:

* :mod:`landscape.geometry.directions` -- random, PCA and eigenvector directions;
* :mod:`landscape.geometry.slices` -- 1-D and 2-D loss grids along directions;
* :mod:`landscape.geometry.valley` -- the river/valley split, kappa, widths;
* :mod:`landscape.geometry.uv_measures` -- U versus V on thresholds shared by two models;
* :mod:`landscape.geometry.measurements` -- widths, loop curves and direction spread of
  a checkpoint;
* :mod:`landscape.geometry.hopping` -- valley hopping along a trajectory;
* :mod:`landscape.geometry.phases` -- matrix entropy and the spectral phase rule;
* :mod:`landscape.geometry.simulator` -- valley hopping on quadratics (Theorem 1).
"""

"""Curvature of a loss as a function of parameters: operators and their spectra.

Takes in a loss function of a parameter dict (:mod:`landscape.curvature.objective`) and
hands on eigenvalues, eigenvectors, traces and densities. Knows no model, task or file:

* :mod:`landscape.curvature.objective` -- ``(loss_fn, params)``, flat parameter layouts,
  and the loss split at the model's output (``SplitObjective``);
* :mod:`landscape.curvature.spectral` -- the operator protocol, Lanczos, Hutch++, SLQ,
  exact spectra;
* :mod:`landscape.curvature.hessian` -- the Hessian-vector-product operator;
* :mod:`landscape.curvature.ggn` -- the generalised Gauss-Newton operator ``J^T H J``;
* :mod:`landscape.curvature.fisher` -- the empirical Fisher operator ``(1/N) sum g g^T``;
* :mod:`landscape.curvature.krylov_basis` -- where a Krylov basis lives (memory or file);
* :mod:`landscape.curvature.dense_hessian` -- the dense Hessian and the exact valley;
* :mod:`landscape.curvature.param_blocks` -- per-block Hessian spectra.
"""

"""Spectral algorithms on a symmetric linear operator: Lanczos, Hutch++, SLQ, dense spectra.

Nothing here knows about neural networks. An *operator* is any object with

* ``dim`` (int), ``dtype`` and ``device`` (of the vectors it acts on),
* ``matvec(v: Tensor[P]) -> Tensor[P]``, and optionally ``matmat(V: Tensor[P, b]) -> Tensor[P, b]``,
* ``n_matvec``: how many vectors it has been applied to so far (a ``matmat`` on ``b``
  columns counts ``b``).

:class:`SymmetricOperator` is a base class that does the counting and the shape checks;
:class:`DenseOperator` wraps an explicit matrix (tests, small problems), and
:class:`ScaledOperator` is ``D A D`` for a diagonal ``D`` (preconditioned spectra).

Vectors live in the operator's dtype and device (so CUDA works); every small dense
problem (the tridiagonal matrices of Lanczos and SLQ, the projected matrices of Hutch++)
is solved in float64 on the CPU. Eigenvalues, residuals, weights and estimates come back
as numpy float64 arrays; vectors as torch tensors in the operator's dtype and device.
Random vectors are drawn on the CPU from a seeded generator, in float64, then moved, so a
seed gives the same probes on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from landscape.curvature.krylov_basis import make_basis
from landscape.errors import LandscapeError

# ----------------------------------------------------------------------------- operators


class SymmetricOperator:
    """A symmetric linear map on ``R^dim``, known by its action on vectors.

    Subclasses implement ``_matvec`` (and ``_matmat`` where a batched product pays).
    The public :meth:`matvec` and :meth:`matmat` check shapes, move inputs to the
    operator's dtype and device, and count every column in :attr:`n_matvec`.

    Attributes:
        dim: the dimension P.
        dtype: dtype of the vectors it acts on.
        device: device of the vectors it acts on.
        n_matvec: number of vectors applied so far.
    """

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device | str):
        self.dim, self.dtype, self.device = int(dim), dtype, torch.device(device)
        self.n_matvec = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A v`` for ``v`` ``[P]``; returns ``[P]``."""
        if v.shape != (self.dim,):
            raise LandscapeError(
                f"matvec: vector of shape {tuple(v.shape)}, expected ({self.dim},)"
            )
        self.n_matvec += 1
        return self._matvec(v.to(self.device, self.dtype))

    def matmat(self, vs: torch.Tensor) -> torch.Tensor:
        """``A V`` for ``V`` ``[P, b]``; returns ``[P, b]`` (counts ``b`` products)."""
        if vs.dim() != 2 or vs.shape[0] != self.dim:
            raise LandscapeError(
                f"matmat: matrix of shape {tuple(vs.shape)}, expected ({self.dim}, b)"
            )
        self.n_matvec += vs.shape[1]
        return self._matmat(vs.to(self.device, self.dtype))

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _matmat(self, vs: torch.Tensor) -> torch.Tensor:
        """One product per column, each written into the result as it comes.

        No list of products and a stacked copy of them: ``b + 1`` vectors, not ``2 b``.
        """
        if vs.shape[1] == 1:
            return self._matvec(vs[:, 0]).unsqueeze(1)
        out = torch.empty(vs.shape[1], self.dim, dtype=self.dtype, device=self.device)
        for j in range(vs.shape[1]):
            out[j] = self._matvec(vs[:, j])
        return out.T


class DenseOperator(SymmetricOperator):
    """An explicit symmetric matrix as an operator.

    Args:
        matrix: ``[P, P]``, symmetric to within ``1e3 * eps`` of its dtype (relative to
            its largest entry); its dtype and device are the operator's.
    """

    def __init__(self, matrix: torch.Tensor):
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise LandscapeError(f"DenseOperator: need a square matrix, got {tuple(matrix.shape)}")
        if not matrix.dtype.is_floating_point:
            raise LandscapeError(f"DenseOperator: need a floating-point matrix, got {matrix.dtype}")
        scale = float(matrix.abs().max()) if matrix.numel() else 0.0
        asym = float((matrix - matrix.T).abs().max()) if matrix.numel() else 0.0
        if asym > 1e3 * torch.finfo(matrix.dtype).eps * max(scale, 1e-300):
            raise LandscapeError(
                f"DenseOperator: matrix is not symmetric (max |A - A^T| = {asym:.3g})"
            )
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v

    def _matmat(self, vs: torch.Tensor) -> torch.Tensor:
        return self.matrix @ vs


class ScaledOperator(SymmetricOperator):
    """``D A D`` for a symmetric operator ``A`` and a diagonal ``D = diag(scale)``.

    Args:
        op: the operator ``A``.
        scale: ``[P]`` the diagonal of ``D`` (cast to the operator's dtype and device).
    """

    def __init__(self, op, scale: torch.Tensor):
        if scale.shape != (op.dim,):
            raise LandscapeError(f"ScaledOperator: scale has shape {tuple(scale.shape)}, "
                                 f"expected ({op.dim},)")
        if not bool(torch.isfinite(scale).all()):
            raise LandscapeError("ScaledOperator: scale has non-finite entries")
        super().__init__(op.dim, op.dtype, op.device)
        self.op, self.scale = op, scale.to(op.device, op.dtype)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op.matvec(self.scale * v)

    def _matmat(self, vs: torch.Tensor) -> torch.Tensor:
        return self.scale[:, None] * apply(self.op, self.scale[:, None] * vs)


def apply(op, vs: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``A V`` for ``V`` ``[P, b]``, through ``op.matmat`` in chunks of columns where it has one.

    Args:
        op: an operator.
        vs: ``[P, b]`` in the operator's dtype and device.
        chunk: at most this many columns per ``matmat`` call (default: all at once).

    Returns:
        ``[P, b]``.
    """
    b = vs.shape[1]
    if not hasattr(op, "matmat"):
        cols = [op.matvec(vs[:, j]) for j in range(b)]
        return torch.stack(cols, dim=1) if cols else vs.clone()
    step = b if not chunk else max(1, int(chunk))
    if b <= step:
        return op.matmat(vs)
    return torch.cat([op.matmat(vs[:, i : i + step]) for i in range(0, b, step)], dim=1)


# ----------------------------------------------------------------------------- randomness


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _gaussian(op, n: int, gen: torch.Generator) -> torch.Tensor:
    """``[P, n]`` standard normal entries in the operator's dtype and device."""
    return torch.randn(op.dim, n, generator=gen, dtype=torch.float64).to(op.device, op.dtype)


def _rademacher(op, n: int, gen: torch.Generator) -> torch.Tensor:
    """``[P, n]`` independent +-1 entries in the operator's dtype and device.

    Drawn column after column (as ``[n, P]``, transposed), so ``n`` draws of one column
    give the same vectors as one draw of ``n`` columns.
    """
    bits = torch.randint(0, 2, (n, op.dim), generator=gen, dtype=torch.int8)
    return (2 * bits - 1).to(op.device, op.dtype).T


# ----------------------------------------------------------------------------- Lanczos core


DGKS = 1 / math.sqrt(2)
"""Re-orthogonalise again while a Gram-Schmidt pass keeps less than this share of the norm."""

BASIS_BUDGET = 64 * 2**20
"""Bytes of Krylov basis under which :func:`lanczos` never restarts (``max_basis="auto"``).

A Lanczos basis of ``max_steps`` vectors that fits in 64 MiB (any ``max_steps <= 300`` up
to ``P = 55,000`` in float32, i.e. every model this project trains) is kept whole, as it
always was; a larger one is capped (see :func:`basis_cap`)."""


class _Krylov:
    """A Krylov basis grown one Lanczos step at a time, fully re-orthogonalised.

    After ``m`` steps: ``A Q_m = Q_m T_m + sum_k r_k e_{end_k}^T`` with ``Q_m`` ``[P, m]``
    orthonormal and ``T_m`` tridiagonal (``alpha`` on the diagonal, ``off`` beside it). The
    ``r_k`` are the residuals at the end of each block: a block ends where the recurrence
    broke down (an invariant subspace was found, ``|r_k|`` at rounding level), and the
    basis then continues with a fresh random direction orthogonal to all before it, with
    a zero coupling in ``T``. The last block's residual is the live one (``rnorm``).
    """

    def __init__(self, op, v0: torch.Tensor, gen: torch.Generator,
                 capacity: int | None = None, storage: str = "auto",
                 directory: str | None = None, rows: int | None = None):
        self.op, self.gen = op, gen
        self.m, self.alpha, self.off = 0, [], []
        self.n_steps = 0  # steps (products) over all cycles; equals m without a restart
        self.arrow: np.ndarray | None = None  # after a thick restart: see restart()
        self.thick_restarts, self.floor = 0, 0.0
        self.block_ends, self.block_rnorms = [], []  # closed blocks: last index, |r_k|
        self.w, self.rnorm, self.hnorm = None, 0.0, 0.0
        self.eps = torch.finfo(op.dtype).eps
        nrm = float(torch.linalg.vector_norm(v0))
        if not math.isfinite(nrm) or nrm == 0.0:
            raise LandscapeError("lanczos: the start vector is zero or not finite")
        self._first = v0.to(op.device, op.dtype) / nrm
        # the rows Q (landscape.curvature.krylov_basis): in memory, or streamed from a temporary
        # file
        self.basis = make_basis(storage, op.dim, op.dtype, op.device, capacity, directory, rows)

    @property
    def restarts(self) -> int:
        """Number of breakdowns (invariant subspaces) met so far."""
        return len(self.block_ends)

    @property
    def broken_down(self) -> bool:
        """Whether the current basis spans an invariant subspace (residual at rounding level)."""
        return self.rnorm <= 100 * self.eps * max(self.hnorm, 1e-300)

    @property
    def block_start(self) -> int:
        """Index of the first basis vector of the current block."""
        return self.block_ends[-1] + 1 if self.block_ends else 0

    def _append(self, q: torch.Tensor) -> None:
        self.basis.append(q)
        self.m = self.basis.m
        self.n_steps += 1

    def _orthogonalise(self, w: torch.Tensor, ref: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``w`` minus its projection on the basis: classical Gram-Schmidt with DGKS passes.

        A pass is repeated (at most twice) only while it cancelled: while the norm left is
        below ``1/sqrt(2)`` of the norm before it, ``ref`` for the first pass (the norm of
        the product before anything was subtracted from it; default ``||w||``). This is
        the criterion of Daniel, Gragg, Kaufman and Stewart (1976) that ARPACK uses: a
        second pass when one was not enough, and no second sweep of the basis otherwise
        (each sweep reads all ``m P`` floats of the basis).

        Returns the new ``w`` and the first pass's coefficients ``Q^T w`` ``[m]``.
        """
        before = float(torch.linalg.vector_norm(w)) if ref is None else ref
        first = self.basis.project(w)
        for _ in range(2):
            after = float(torch.linalg.vector_norm(w))
            if after >= DGKS * before:
                break
            before = after
            self.basis.project(w)
        return w, first

    def _fresh_direction(self) -> torch.Tensor:
        for _ in range(5):
            w, _ = self._orthogonalise(_gaussian(self.op, 1, self.gen)[:, 0])
            w, _ = self._orthogonalise(w)
            nrm = float(torch.linalg.vector_norm(w))
            if nrm > 0:
                return w / nrm
        raise LandscapeError("lanczos: could not find a direction orthogonal to the basis")

    def step(self) -> None:
        """Extend the basis by one vector and apply the operator to it (one matvec)."""
        arrow = None
        if self.m == 0:
            q, coupling, self._first = self._first, 0.0, None  # held no longer than needed
        elif not self.broken_down:
            q, coupling = self.w.div_(self.rnorm), self.rnorm  # the residual is ours: in place
            self.w = None
            if self.arrow is not None and self.m == len(self.arrow):
                arrow, coupling = self.arrow, float(self.arrow[-1])  # first after a restart
        else:  # breakdown: the basis spans an invariant subspace; start a new block
            self.block_ends.append(self.m - 1)
            self.block_rnorms.append(self.rnorm)
            q, coupling = self._fresh_direction(), 0.0
            if self.arrow is not None and self.m == len(self.arrow):
                self.arrow = None  # the kept Ritz vectors were invariant: no couplings
        if self.m > 0:
            self.off.append(coupling)
        self._append(q)
        j = self.m - 1
        w = self.op.matvec(q)
        ref = float(torch.linalg.vector_norm(w))
        a = float(q @ w)
        w = w - a * q  # a copy: the product may be the operator's own tensor
        if arrow is not None:  # A q couples to every kept Ritz vector: A y_i = theta_i y_i + s_i q
            self.basis.subtract(w, torch.as_tensor(arrow, dtype=w.dtype, device=w.device))
        elif coupling:
            w.add_(self.basis.row(j - 1), alpha=-coupling)
        del q
        w, h = self._orthogonalise(w, ref)
        self.alpha.append(a + float(h[j]))
        self.w, self.rnorm = w, float(torch.linalg.vector_norm(w))
        near = coupling if arrow is None else float(np.abs(arrow).sum())
        self.hnorm = max(self.hnorm, abs(self.alpha[-1]) + near + self.rnorm)

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), eigenvectors of ``T`` ``[m, m]``, residual bounds ``[m]``.

        The residual of Ritz pair ``i`` is bounded by ``sum_k |r_k| |S[end_k, i]|`` over
        the blocks (exactly ``|beta_m S[m-1, i]|`` when there was no breakdown), which is
        ``||A y_i - theta_i y_i||`` up to rounding (of order ``eps ||A||``).
        """
        if self.arrow is None:
            theta, s = eigh_tridiagonal(np.asarray(self.alpha), np.asarray(self.off))
        else:
            theta, s = np.linalg.eigh(self.projected())
        ends = [*self.block_ends, self.m - 1]
        rn = np.asarray([*self.block_rnorms, self.rnorm])
        res = (rn[:, None] * np.abs(s[ends, :])).sum(axis=0) + self.floor
        return theta, s, res

    def projected(self, n: int | None = None) -> np.ndarray:
        """The projected matrix ``Q^T A Q`` (its leading ``n x n``) as a dense float64 array.

        Tridiagonal without a restart; after one, the kept Ritz values on the diagonal and
        their couplings to the next vector in its row and column (an arrowhead).
        """
        n = self.m if n is None else n
        t = np.diag(np.asarray(self.alpha[:n], dtype=np.float64))
        off = np.asarray(self.off[: n - 1], dtype=np.float64)
        t[np.arange(n - 1), np.arange(1, n)] = off
        t[np.arange(1, n), np.arange(n - 1)] = off
        if self.arrow is not None and len(self.arrow) < n:
            n_kept = len(self.arrow)
            t[:n_kept, n_kept] = t[n_kept, :n_kept] = self.arrow
        return t

    def eigvals(self, n: int) -> np.ndarray:
        """Eigenvalues (ascending) of the leading ``n x n`` of the projected matrix."""
        if self.arrow is None:
            return eigh_tridiagonal(np.asarray(self.alpha[:n]), np.asarray(self.off[: n - 1]),
                                    eigvals_only=True)
        return np.linalg.eigvalsh(self.projected(n))

    def restart(self, keep: np.ndarray, theta: np.ndarray, s: np.ndarray) -> None:
        """Thick restart (Wu & Simon 2000): keep the Ritz vectors ``Q S[:, keep]`` only.

        The basis is overwritten by the kept Ritz vectors in place, a slice of
        :data:`landscape.curvature.krylov_basis.ROWS_PER_SWEEP` entries at a time; the live
        residual ``r`` stays the next direction. Then ``A y_i = theta_i y_i + s_i r / |r|`` with
        ``s_i = |r| S[m-1, i]`` (plus rounding), so the projected matrix is
        ``diag(theta)`` bordered by ``s`` in the row and column of the next vector, and
        tridiagonal after it. Breakdown
        residuals of closed blocks (rounding level) are added to :attr:`floor`, which
        every later residual bound includes.
        """
        sk = np.asarray(s[:, keep])
        n_kept = len(keep)
        self.basis.rewrite(torch.as_tensor(sk, dtype=self.op.dtype, device=self.op.device))
        self.floor += float(np.sum(self.block_rnorms))
        self.arrow = self.rnorm * sk[self.m - 1, :]
        self.alpha, self.off = [float(x) for x in theta[keep]], [0.0] * (n_kept - 1)
        self.block_ends, self.block_rnorms = [], []
        self.m = n_kept
        self.thick_restarts += 1

    def vectors(self, s_cols: np.ndarray) -> torch.Tensor:
        """``Q_m S[:, cols]`` ``[P, c]``: Ritz vectors in the operator's dtype and device."""
        return self.basis.combine(torch.as_tensor(s_cols, dtype=self.op.dtype,
                                                  device=self.op.device))


# ----------------------------------------------------------------------------- Lanczos


@dataclass(frozen=True)
class LanczosResult:
    """Extreme eigenpairs found by :func:`lanczos`.

    Attributes:
        top_values: ``[k_top]`` largest Ritz values, descending.
        top_vectors: ``[P, k_top]`` their Ritz vectors (unit norm), operator dtype/device.
        top_residuals: ``[k_top]`` ``||A y - theta y||`` (bound from the recurrence, honest
            to rounding).
        top_converged: ``[k_top]`` bool, ``residual <= tol * max|theta|``.
        bottom_values: ``[k_bottom]`` smallest Ritz values, ascending.
        bottom_vectors: ``[P, k_bottom]``.
        bottom_residuals: ``[k_bottom]``.
        bottom_converged: ``[k_bottom]`` bool.
        ritz_values: all Ritz values of the final Krylov space, ascending (``[steps]``
            without a thick restart, at most ``[max_basis]`` with one).
        tol: the tolerance used.
        steps: Lanczos steps taken, over all restart cycles (the dimension of the final
            Krylov space when there was no thick restart).
        n_matvec: operator applications spent (equals ``steps``).
        restarts: breakdowns met (invariant subspaces; each restarted with a random vector).
        converged: every requested eigenvalue converged.
        max_basis: the cap on the basis that applied (None: none, see :func:`basis_cap`).
        thick_restarts: times the basis reached ``max_basis`` and was thick-restarted.
        basis_storage: where the basis was held, ``"memory"`` or ``"file"``.
    """

    top_values: np.ndarray
    top_vectors: torch.Tensor
    top_residuals: np.ndarray
    top_converged: np.ndarray
    bottom_values: np.ndarray
    bottom_vectors: torch.Tensor
    bottom_residuals: np.ndarray
    bottom_converged: np.ndarray
    ritz_values: np.ndarray
    tol: float
    steps: int
    n_matvec: int
    restarts: int
    converged: bool
    max_basis: int | None = None
    thick_restarts: int = 0
    basis_storage: str = "memory"


def default_tol(dtype: torch.dtype) -> float:
    """Default Lanczos tolerance: ``1e-8`` in float64, ``1e-4`` in lower precision.

    A residual ``r`` bounds an eigenvalue's error by ``r`` and, away from clusters, by
    ``r^2 / gap``; ``1e-4`` relative is above the rounding floor of float32 HVPs.
    """
    return 1e-8 if dtype == torch.float64 else 1e-4


def _start_vector(op, v0, warm, warm_noise: float, gen: torch.Generator) -> torch.Tensor:
    """The Lanczos start: ``v0``, or the normalised sum of ``warm``'s columns plus noise."""
    if v0 is not None and warm is not None:
        raise LandscapeError("lanczos: give v0 or warm, not both")
    if v0 is not None:
        if v0.shape != (op.dim,):
            raise LandscapeError(f"lanczos: v0 has shape {tuple(v0.shape)}, expected ({op.dim},)")
        return v0.to(op.device, op.dtype)
    noise = _gaussian(op, 1, gen)[:, 0]
    noise = noise / torch.linalg.vector_norm(noise)
    if warm is None:
        return noise
    if warm.dim() != 2 or warm.shape[0] != op.dim:
        raise LandscapeError(f"lanczos: warm has shape {tuple(warm.shape)}, expected ({op.dim}, k)")
    if warm_noise < 0:
        raise LandscapeError(f"lanczos: warm_noise={warm_noise} must be >= 0")
    w = warm.to(op.device, op.dtype)
    w = w / torch.linalg.vector_norm(w, dim=0).clamp_min(1e-300)
    start = w.sum(dim=1)
    start = start / torch.linalg.vector_norm(start).clamp_min(1e-300)
    return start + warm_noise * noise


def _check_lanczos_args(op, k_top: int, k_bottom: int, max_steps: int, tol: float) -> None:
    if k_top < 0 or k_bottom < 0 or k_top + k_bottom < 1:
        raise LandscapeError(f"lanczos: k_top={k_top}, k_bottom={k_bottom}: ask for at least one")
    if k_top + k_bottom > op.dim:
        raise LandscapeError(f"lanczos: k_top + k_bottom = {k_top + k_bottom} exceeds the "
                             f"dimension {op.dim}; ask for fewer eigenvalues")
    if not k_top + k_bottom <= max_steps <= op.dim:
        raise LandscapeError(f"lanczos: max_steps={max_steps} must lie between k_top + k_bottom"
                             f" = {k_top + k_bottom} and the dimension {op.dim}")
    if not tol >= 0:
        raise LandscapeError(f"lanczos: tol={tol} must be >= 0")


def lanczos(
    op,
    k_top: int = 5,
    k_bottom: int = 0,
    *,
    tol: float | None = None,
    max_steps: int | None = None,
    v0: torch.Tensor | None = None,
    warm: torch.Tensor | None = None,
    warm_noise: float = 0.1,
    seed: int = 0,
    exact_residuals: bool = False,
    max_basis: int | str | None = "auto",
    basis_storage: str = "auto",
    basis_dir: str | None = None,
) -> LanczosResult:
    """Top-k and bottom-k eigenpairs of a symmetric operator by Lanczos.

    Every new Krylov vector is re-orthogonalised against all previous ones (classical
    Gram-Schmidt, twice), so there are no ghost eigenvalues; the tridiagonal matrix is
    solved in float64 after every step, and the space grows until every requested Ritz
    pair has ``||A y - theta y|| <= tol * max|theta|`` (``max|theta|`` over all Ritz
    values, an estimate of ``||A||``), or until ``max_steps``. An error ``r`` in the
    residual means an eigenvalue error of at most ``r``, and about ``r^2 / gap`` for an
    eigenvalue separated from the rest of the spectrum by ``gap``.

    On breakdown (an invariant subspace, e.g. a start vector in the span of a few
    eigenvectors, or repeated eigenvalues) the basis continues with a random vector
    orthogonal to it, so ``max_steps == dim`` always recovers the whole spectrum
    (``ritz_values``). A single start vector sees each repeated eigenvalue once until
    then: copies appear only after a breakdown (or through rounding).

    Warm start: ``warm`` ``[P, k]`` (e.g. the previous checkpoint's top and bottom
    eigenvectors) gives the start vector ``normalise(sum_i w_i / |w_i|) + warm_noise * g``
    with ``g`` a random unit vector. The sum puts weight on every old eigenvector at once
    (the Krylov space contains their span after about ``k`` steps if they are still
    near-eigenvectors); the noise keeps every other direction reachable.

    Memory: the basis holds at most ``max_basis`` vectors of P floats. When it is full and
    the wanted pairs have not converged, it is thick-restarted (Wu & Simon, SIAM J. Matrix
    Anal. Appl. 22, 2000): the wanted Ritz vectors and as many of their unwanted neighbours
    (half of the rest of the basis) are kept, overwriting the basis in place, and Lanczos
    continues from the last residual; the Ritz values after a restart are those of the
    kept vectors plus the new ones, so nothing converged is lost. A restarted run needs
    more products than an unrestarted one on hard spectra, in ``O(max_basis P)`` memory
    instead of ``O(steps P)``. By default (``"auto"``, :func:`basis_cap`) there is no cap
    while ``max_steps`` vectors fit in 64 MiB (every problem below about 55,000 parameters
    in float32 runs as before, step for step), and 20 vectors (or ``2 k + 10``) above.
    Where even the capped basis is large (above 256 MiB: 20 vectors of a 3.4M-parameter
    model in float32), it goes to an unnamed temporary file under ``basis_storage="auto"``
    on the CPU and is streamed back a row at a time (:mod:`landscape.curvature.krylov_basis`), so
    the process holds a few vectors of P floats beside the operator, not the basis (its cost
    in time: BENCHMARKS.md, "Peak memory"; ``basis_storage="memory"`` where the memory is
    there).

    Args:
        op: a symmetric operator (``dim``, ``dtype``, ``device``, ``matvec``).
        k_top: number of largest eigenvalues wanted.
        k_bottom: number of smallest (most negative) eigenvalues wanted.
        tol: relative residual tolerance; default :func:`default_tol` of ``op.dtype``.
            ``tol=0`` never stops early: it runs ``max_steps`` steps.
        max_steps: largest Krylov dimension (default ``min(dim, 300)``).
        v0: ``[P]`` start vector (default: random, seeded).
        warm: ``[P, k]`` vectors to warm-start from (exclusive with ``v0``).
        warm_noise: relative size of the random part of a warm start.
        seed: seed of the random start and of any restart vectors.
        exact_residuals: recompute the returned pairs' residuals (and converged flags) by
            explicit products, ``k_top + k_bottom`` more matvecs. Without it they come from
            the recurrence (free, and equal to the true ones up to ``~eps ||A||``).
        max_basis: the most Krylov vectors held at once: an int (at least
            ``k_top + k_bottom + 2``), None (never restart: the basis grows to the
            steps taken), or ``"auto"`` (:func:`basis_cap`). ``max_steps`` still bounds
            the steps (products) over all restart cycles.
        basis_storage: ``"memory"``, ``"file"`` (a temporary file, streamed) or
            ``"auto"`` (:func:`landscape.curvature.krylov_basis.choose_storage`: a file only for a
            capped basis above 256 MiB of a CPU operator).
        basis_dir: directory of that file (default: the system's, ``TMPDIR``).

    Returns:
        A :class:`LanczosResult`; ``converged`` is False if ``max_steps`` ran out first.

    Raises:
        LandscapeError: ``k_top + k_bottom`` exceeds the dimension, bad ``max_steps``,
            ``tol``, ``max_basis`` or ``basis_storage``, a zero start vector, a basis
            file that cannot be written.
    """
    tol = default_tol(op.dtype) if tol is None else float(tol)
    max_steps = min(op.dim, 300) if max_steps is None else int(max_steps)
    _check_lanczos_args(op, k_top, k_bottom, max_steps, tol)
    cap = basis_cap(op, k_top, k_bottom, max_steps, max_basis)
    gen = _generator(seed)
    kry = _Krylov(op, _start_vector(op, v0, warm, warm_noise, gen), gen, capacity=cap,
                  storage=basis_storage, directory=basis_dir, rows=max_steps + 1)
    try:
        start = getattr(op, "n_matvec", 0)
        while True:
            kry.step()
            if kry.m < k_top + k_bottom and kry.n_steps < max_steps:
                continue
            theta, s, res = kry.ritz()
            want = np.r_[np.arange(k_bottom), np.arange(kry.m - k_top, kry.m)]
            conv = res <= tol * np.abs(theta).max()
            if kry.n_steps >= max_steps:
                break
            if tol > 0 and bool(conv[want].all()) and not _block_found_more(
                    kry, theta, k_top, k_bottom, tol):
                break
            if cap is not None and kry.m >= cap:
                kry.restart(_kept(kry.m, cap, k_top, k_bottom), theta, s)
        top = np.arange(kry.m - 1, kry.m - 1 - k_top, -1)
        bot = np.arange(k_bottom)
        vec_top, vec_bot = kry.vectors(s[:, top]), kry.vectors(s[:, bot])
        kry.w = None  # the residual: not needed by what follows
    finally:
        storage = kry.basis.kind
        kry.basis.close()
    if exact_residuals:
        res, scale = res.copy(), tol * np.abs(theta).max()
        res[top] = _true_residuals(op, vec_top, theta[top])
        res[bot] = _true_residuals(op, vec_bot, theta[bot])
        conv = res <= scale
    return LanczosResult(
        top_values=theta[top], top_vectors=vec_top, top_residuals=res[top],
        top_converged=conv[top], bottom_values=theta[bot], bottom_vectors=vec_bot,
        bottom_residuals=res[bot], bottom_converged=conv[bot], ritz_values=theta, tol=tol,
        steps=kry.n_steps, n_matvec=int(getattr(op, "n_matvec", kry.n_steps) - start),
        restarts=kry.restarts, converged=bool(conv[top].all() and conv[bot].all()),
        max_basis=cap, thick_restarts=kry.thick_restarts, basis_storage=storage,
    )


def basis_cap(op, k_top: int, k_bottom: int, max_steps: int,
              max_basis: int | str | None = "auto") -> int | None:
    """The most Krylov vectors :func:`lanczos` keeps (None: no cap, it never restarts).

    ``"auto"``: no cap while ``max_steps`` vectors fit in :data:`BASIS_BUDGET` (64 MiB),
    so small problems run exactly as an unrestarted Lanczos; otherwise
    ``max(2 (k_top + k_bottom) + 10, 20, vectors that fit in the budget)``, i.e. 20
    vectors for the top 5 of a 1M-parameter model in float32 or float64. An int is used as
    given (at least ``k_top + k_bottom + 2``); a cap of ``max_steps`` or more is no cap.

    Raises:
        LandscapeError: an int cap below ``k_top + k_bottom + 2``, or an unknown string.
    """
    k = k_top + k_bottom
    if max_basis is None:
        return None
    if isinstance(max_basis, str):
        if max_basis != "auto":
            raise LandscapeError(f"lanczos: max_basis={max_basis!r}; give an int, None or 'auto'")
        per_vector = op.dim * torch.empty(0, dtype=op.dtype).element_size()
        if max_steps * per_vector <= BASIS_BUDGET:
            return None
        max_basis = max(2 * k + 10, 20, BASIS_BUDGET // per_vector)
    cap = int(max_basis)
    if cap < k + 2:
        raise LandscapeError(f"lanczos: max_basis={cap} must be at least k_top + k_bottom + 2 "
                             f"= {k + 2}")
    return None if cap >= max_steps else cap


def _kept(m: int, cap: int, k_top: int, k_bottom: int) -> np.ndarray:
    """Indices (into ascending Ritz values) of the Ritz vectors a thick restart keeps.

    The wanted ones and, beside them, half of the rest of the basis (split between the two
    ends in proportion to ``k_top`` and ``k_bottom``): the nearest unwanted Ritz vectors
    hold most of what the basis knows about the gap, and the other half of the basis is
    left for new directions (Wu & Simon's thick restart keeps about this many).
    """
    extra = (cap - k_top - k_bottom) // 2
    e_top = round(extra * k_top / (k_top + k_bottom))  # all of it to the only end asked for
    n_top, n_bot = k_top + e_top, k_bottom + extra - e_top
    return np.r_[np.arange(n_bot), np.arange(m - n_top, m)]


def _block_found_more(kry: _Krylov, theta: np.ndarray, k_top: int, k_bottom: int,
                      tol: float) -> bool:
    """After a breakdown, whether the block just closed changed the wanted eigenvalues.

    A block that ends in an invariant subspace leaves the rest of the space unexplored.
    If it added nothing to the wanted ends (all its values lie inside them, up to
    ``tol``), the earlier blocks already had the answer and the search stops; otherwise
    (e.g. another copy of a repeated top eigenvalue) the next block may find more.
    """
    if not kry.broken_down or kry.m >= kry.op.dim:
        return False
    start = kry.block_start
    if start < k_top + k_bottom:
        return True
    prev = kry.eigvals(start)
    ends = np.r_[np.arange(k_bottom), np.arange(-k_top, 0)]
    slack = max(tol, 1e3 * float(kry.eps)) * np.abs(theta).max()
    return bool(np.abs(theta[ends] - prev[ends]).max() > slack)


def _true_residuals(op, vecs: torch.Tensor, theta: np.ndarray) -> np.ndarray:
    """``||A y_i - theta_i y_i||`` by explicit products (``len(theta)`` matvecs)."""
    if not len(theta):
        return np.zeros(0)
    ay = apply(op, vecs).double()
    r = ay - vecs.double() * torch.as_tensor(theta, device=ay.device)
    return torch.linalg.vector_norm(r, dim=0).cpu().numpy()


# ----------------------------------------------------------------------------- trace


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate.

    Attributes:
        estimate: the trace estimate.
        stderr: standard error of the Hutchinson part (sample std / sqrt(probes)); the
            low-rank part of Hutch++ is exact given its subspace and adds no error term.
        low_rank: ``tr(Q^T A Q)`` over the sketched (or given) subspace; 0 for Hutchinson.
        residual: the Hutchinson estimate of the trace on the complement.
        n_probes: Rademacher probes of the Hutchinson part.
        rank: dimension of the deflated subspace ``Q`` (0 for Hutchinson).
        n_matvec: operator applications spent.
        samples: ``[n_probes]`` the individual ``g^T A g`` of the Hutchinson part.
    """

    estimate: float
    stderr: float
    low_rank: float
    residual: float
    n_probes: int
    rank: int
    n_matvec: int
    samples: np.ndarray


AUTO_CHUNK = {"cuda": 32, "other": 4}
"""Probes per ``matmat`` call under ``chunk="auto"``: 32 on a GPU (batched products pay
there), 4 elsewhere (a CPU operator applies columns one by one anyway, and every probe in a
chunk holds two vectors of P floats); fewer where that many would pass
:data:`CHUNK_BYTES`."""

CHUNK_BYTES = {"cuda": 1 << 30, "other": 64 << 20}
"""Bytes of probes per ``matmat`` call under ``chunk="auto"``: a 10M-parameter model in
float32 (43 MiB a vector) gets one probe at a time on the CPU."""

DOT_BLOCK = 1 << 20
"""Entries per float64 partial sum in :func:`_dot64` (an 8 MiB temporary, not a float64
copy of a whole vector)."""


def probes_per_call(dim: int, dtype: torch.dtype, device) -> int:
    """Probes per ``matmat`` call under ``chunk="auto"``.

    :data:`AUTO_CHUNK`, fewer where that many vectors of ``dim`` entries would pass
    :data:`CHUNK_BYTES` (at least one).
    """
    kind = "cuda" if torch.device(device).type == "cuda" else "other"
    per_probe = dim * torch.empty(0, dtype=dtype).element_size()
    return max(1, min(AUTO_CHUNK[kind], CHUNK_BYTES[kind] // max(per_probe, 1)))


def _chunk(op, chunk) -> int | None:
    return probes_per_call(op.dim, op.dtype, op.device) if chunk == "auto" else chunk


def _dot64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a . b`` of two ``[P]`` vectors, products and sum in float64, a block at a time."""
    if a.shape[0] <= DOT_BLOCK:
        return torch.dot(a.double(), b.double())
    return sum(torch.dot(a[i : i + DOT_BLOCK].double(), b[i : i + DOT_BLOCK].double())
               for i in range(0, a.shape[0], DOT_BLOCK))


def _column_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[sum_i a[i, j] b[i, j]]_j`` in float64, a column at a time (no float64 copy of a block)."""
    return torch.stack([_dot64(a[:, j], b[:, j])
                        for j in range(a.shape[1])]) if a.shape[1] else a.new_zeros(0).double()


def _hutchinson_part(op, n: int, gen, basis: torch.Tensor | None, chunk,
                     gram_inv: torch.Tensor | None = None) -> np.ndarray:
    """``g^T (I - Pi) A (I - Pi) g`` for ``n`` Rademacher ``g``; float64 ``[n]``.

    ``Pi`` is the orthogonal projector on the columns of ``basis``: ``Q Q^T`` for
    orthonormal columns, ``Q G^{-1} Q^T`` given ``gram_inv = G^{-1}`` (``G = Q^T Q``).
    The probes are drawn and applied ``chunk`` at a time (all at once for ``chunk=None``),
    so only ``O(chunk P)`` floats are alive beside the basis; the draws do not depend on
    ``chunk``.
    """
    chunk = _chunk(op, chunk)
    step = n if not chunk else max(1, int(chunk))
    out = []
    for start in range(0, n, step):
        g = _rademacher(op, min(step, n - start), gen)
        if basis is not None and basis.shape[1]:
            c = basis.T @ g
            if gram_inv is not None:
                c = (gram_inv @ c.double()).to(c.dtype)
            g.addmm_(basis, c, alpha=-1.0)  # in place: no [P, chunk] temporary
        ag = op.matmat(g) if hasattr(op, "matmat") else apply(op, g)
        out.append(_column_dots(g, ag).cpu())
        del g, ag
    return torch.cat(out).numpy() if out else np.zeros(0)


def _summary(samples: np.ndarray) -> tuple[float, float]:
    n = samples.size
    mean = float(samples.mean()) if n else 0.0
    stderr = float(samples.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return mean, stderr


def hutchinson(op, n: int, seed: int = 0, chunk: int | str | None = "auto") -> TraceEstimate:
    """Hutchinson's trace estimate ``mean_i g_i^T A g_i`` over ``n`` Rademacher probes.

    Args:
        op: a symmetric operator.
        n: number of probes (= matvecs), at least 2.
        seed: probe seed.
        chunk: probes per ``matmat`` call (``"auto"``: :func:`probes_per_call`).

    Returns:
        A :class:`TraceEstimate` (``stderr`` = sample std / sqrt(n)).
    """
    if n < 2:
        raise LandscapeError(f"hutchinson: n={n} probes; need at least 2 for a standard error")
    samples = _hutchinson_part(op, n, _generator(seed), None, chunk)
    mean, stderr = _summary(samples)
    return TraceEstimate(mean, stderr, 0.0, mean, n, 0, n, samples)


def _orthonormal(vs: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``[P, c]`` of the columns of ``vs`` (QR in float64)."""
    q, _ = torch.linalg.qr(vs.double())
    return q.to(vs.dtype)


GRAM_COND_MAX = 1e8
"""Largest condition number of ``Q^T Q`` that :func:`hutchpp` inverts (float64: 8 digits
left); a basis beyond it is orthonormalised by a QR."""


def _gram_inverse(q: torch.Tensor):
    """``(Q^T Q)^{-1}`` ``[c, c]`` in float64 on ``q``'s device.

    False where ``Q^T Q`` is ill-conditioned (beyond :data:`GRAM_COND_MAX`) or not finite.
    """
    c = q.shape[1]
    gram = torch.zeros(c, c, dtype=torch.float64)
    for i in range(c):
        for j in range(i, c):  # symmetric: one dot per pair
            gram[i, j] = gram[j, i] = _dot64(q[:, i], q[:, j])
    if not c:
        return gram.to(q.device)
    ev = torch.linalg.eigvalsh(gram)
    if not bool(torch.isfinite(ev).all()) or float(ev[0]) <= float(ev[-1]) / GRAM_COND_MAX:
        return False
    return torch.linalg.inv(gram).to(q.device)


def hutchpp(
    op, n_matvec: int, seed: int = 0, *, basis: torch.Tensor | None = None,
    chunk: int | str | None = "auto",
) -> TraceEstimate:
    """Hutch++ trace estimate (Meyer, Musco, Musco & Woodruff, SOSA 2021), Rademacher probes.

    With ``m = n_matvec``: sketch ``Y = A S`` with ``m/3`` Rademacher columns, take
    ``Q = orth(Y)``; the trace is ``tr(Q^T A Q)`` (``m/3`` matvecs, exact on that
    subspace) plus Hutchinson on ``(I - QQ^T) A (I - QQ^T)`` with the remaining ``m/3``
    probes. The top of the spectrum, which dominates Hutchinson's variance, is thus
    removed: error ``O(1/m)`` instead of ``O(1/sqrt(m))`` for PSD operators.

    With ``basis`` (e.g. Lanczos's top Ritz vectors), that subspace replaces the sketch:
    ``len(basis.T)`` matvecs for the low-rank part, all others to Hutchinson. Its
    ``residual`` is then the bulk trace (the trace without the deflated directions).

    Args:
        op: a symmetric operator.
        n_matvec: total matvec budget, at least 4 (at least ``basis`` columns + 2).
        seed: probe seed.
        basis: ``[P, k]`` optional deflation subspace. Its columns need not be
            orthonormal and are never copied: the low-rank part is ``tr(G^{-1} Q^T A Q)``
            and the projector ``Q G^{-1} Q^T`` with ``G = Q^T Q`` (in float64), both exact
            for any basis of the subspace (5 Ritz vectors of a 10M-parameter model are
            217 MiB, and float32 ones are orthonormal only to about 1e-5). Nearly
            dependent columns (``G`` worse conditioned than 1e8) get a QR instead.
        chunk: columns per ``matmat`` call (``"auto"``: :func:`probes_per_call`).

    Returns:
        A :class:`TraceEstimate`; ``stderr`` is that of the Hutchinson part.
    """
    gen = _generator(seed)
    chunk = _chunk(op, chunk)
    if basis is None:
        if n_matvec < 4:
            raise LandscapeError(f"hutchpp: n_matvec={n_matvec}; need at least 4")
        k = min(n_matvec // 3, op.dim)
        q = _orthonormal(apply(op, _rademacher(op, k, gen), chunk))
    else:
        if basis.dim() != 2 or basis.shape[0] != op.dim:
            raise LandscapeError(f"hutchpp: basis has shape {tuple(basis.shape)}, "
                                 f"expected ({op.dim}, k)")
        k = basis.shape[1]
        if n_matvec < k + 2:
            raise LandscapeError(f"hutchpp: n_matvec={n_matvec}; need at least basis "
                                 f"columns + 2 = {k + 2}")
        q = basis.to(op.device, op.dtype)
    gram_inv = None if basis is None else _gram_inverse(q)
    if gram_inv is False:  # (nearly) dependent columns: an orthonormal basis of their span
        q, gram_inv = _orthonormal(q), None
    step = q.shape[1] if not chunk else max(1, int(chunk))
    low = 0.0
    for i in range(0, q.shape[1], step):  # a chunk of products at a time
        cols = q[:, i : i + step]
        aq = apply(op, cols)
        if gram_inv is None:  # orthonormal columns: tr(Q^T A Q)
            low += float(_column_dots(cols, aq).sum())
        else:  # tr(G^-1 M) with M = Q^T A Q: the part of columns i:i+step
            m = torch.stack([torch.stack([_dot64(q[:, r], aq[:, j])
                                          for j in range(aq.shape[1])])
                             for r in range(q.shape[1])])  # [k, chunk]
            low += float((gram_inv[i : i + step, :] * m.T).sum())
        del aq
    n_probes = n_matvec - (2 * k if basis is None else k)
    if q.shape[1] >= op.dim:
        n_probes = 0  # the subspace is everything: the trace is exact
    samples = _hutchinson_part(op, n_probes, gen, q, chunk, gram_inv)
    mean, stderr = _summary(samples)
    if n_probes == 0:
        stderr = 0.0
    used = (0 if basis is None else -k) + 2 * k + n_probes
    return TraceEstimate(low + mean, stderr, low, mean, n_probes, q.shape[1], used, samples)


# ----------------------------------------------------------------------------- density


@dataclass(frozen=True)
class SLQResult:
    """Raw stochastic Lanczos quadrature.

    The spectral density ``(1/P) sum_i delta(x - lambda_i)`` is estimated by
    ``(1/n_runs) sum_r sum_j weights[r, j] delta(x - nodes[r, j])``; multiply by ``P`` for
    eigenvalue counts. For every run and every polynomial ``f`` of degree below
    ``2 n_steps``, ``sum_j weights[r, j] f(nodes[r, j]) = v_r^T f(A) v_r`` exactly
    (Gauss quadrature), so the moments are Hutchinson estimates of ``tr f(A) / P``.

    Attributes:
        nodes: ``[n_runs, n_steps]`` Ritz values of each run, ascending.
        weights: ``[n_runs, n_steps]`` squared first components of the Ritz vectors;
            each row sums to 1 (zeros after a breakdown: nodes the start vector cannot see).
        n_matvec: operator applications spent (``n_runs * n_steps``).
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_matvec: int


def slq(op, n_runs: int = 10, n_steps: int = 90, seed: int = 0) -> SLQResult:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019).

    Each run starts Lanczos (fully re-orthogonalised, restarted on breakdown) from a
    normalised Rademacher vector ``v`` and takes ``n_steps`` steps; the eigenvalues of
    the tridiagonal matrix are the nodes, the squared first components of its
    eigenvectors the weights. No smoothing here: see :func:`density_on_grid`.

    Args:
        op: a symmetric operator.
        n_runs: number of independent start vectors.
        n_steps: Lanczos steps per run (at most ``dim``).
        seed: seed of the start vectors.

    Returns:
        An :class:`SLQResult`.
    """
    if n_runs < 1 or n_steps < 1:
        raise LandscapeError(f"slq: n_runs={n_runs}, n_steps={n_steps} must be >= 1")
    if n_steps > op.dim:
        raise LandscapeError(f"slq: n_steps={n_steps} exceeds the dimension {op.dim}; "
                             "use fewer steps or exact_spectrum for so small an operator")
    gen = _generator(seed)
    nodes = np.empty((n_runs, n_steps))
    weights = np.empty((n_runs, n_steps))
    for r in range(n_runs):
        v = _rademacher(op, 1, gen)[:, 0]
        kry = _Krylov(op, v, gen, capacity=n_steps)  # a large basis goes to a file
        try:
            for _ in range(n_steps):
                kry.step()
        finally:
            kry.basis.close()
        theta, s, _ = kry.ritz()
        nodes[r], weights[r] = theta, s[0, :] ** 2
    return SLQResult(nodes, weights, n_runs * n_steps)


def density_on_grid(nodes, weights, grid, sigma: float) -> np.ndarray:
    """Gaussian-smoothed SLQ density on a grid (for plots and tests).

    Args:
        nodes: ``[n_runs, n_steps]`` (or ``[n_steps]``) quadrature nodes.
        weights: same shape, rows summing to 1.
        grid: ``[G]`` points at which to evaluate.
        sigma: Gaussian width (> 0).

    Returns:
        ``[G]`` the average over runs of ``sum_j w_j N(x; node_j, sigma^2)``; it integrates
        to 1 over the real line.
    """
    if not sigma > 0:
        raise LandscapeError(f"density_on_grid: sigma={sigma} must be > 0")
    nodes, weights = np.atleast_2d(nodes), np.atleast_2d(weights)
    if nodes.shape != weights.shape:
        raise LandscapeError(f"density_on_grid: nodes {nodes.shape} and weights {weights.shape} "
                             "differ in shape")
    x = np.asarray(grid, dtype=np.float64)
    z = (x[:, None] - nodes.reshape(-1)[None, :]) / sigma  # [G, R * S]
    kern = np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
    return kern @ weights.reshape(-1) / nodes.shape[0]


# ----------------------------------------------------------------------------- dense


def dense_matrix(op, chunk: int = 64, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The operator as an explicit matrix, built column by column and symmetrised.

    Columns come in batches of ``chunk`` through ``op.matmat`` where it exists (``dim``
    matvecs in all); the result is then replaced by ``(M + M^T) / 2`` block by block, in
    place.

    Args:
        op: a symmetric operator.
        chunk: columns per batch.
        dtype: dtype of the result (default the operator's).

    Returns:
        ``[P, P]`` on the operator's device.
    """
    if chunk < 1:
        raise LandscapeError(f"dense_matrix: chunk={chunk} must be >= 1")
    p = op.dim
    out = torch.empty(p, p, dtype=dtype or op.dtype, device=op.device)
    for i in range(0, p, chunk):
        eye = torch.zeros(p, min(chunk, p - i), dtype=op.dtype, device=op.device)
        eye[i : i + eye.shape[1]] = torch.eye(eye.shape[1], dtype=op.dtype, device=op.device)
        out[:, i : i + eye.shape[1]] = apply(op, eye)
    for i in range(0, p, chunk):  # symmetrise in place, one pair of blocks at a time
        for j in range(i, p, chunk):
            a, b = out[i : i + chunk, j : j + chunk], out[j : j + chunk, i : i + chunk]
            avg = 0.5 * (a + b.T)
            a.copy_(avg)
            b.copy_(avg.T)
    return out


def exact_spectrum(op, chunk: int = 64, vectors: bool = False):
    """All eigenvalues of the operator: float64 ``eigh`` of :func:`dense_matrix`.

    The matrix is built in the operator's dtype (float32 columns are fine for histograms:
    errors of order ``eps ||A||``) and cast to float64 for the eigensolver.

    Args:
        op: a symmetric operator.
        chunk: columns per batch while building the matrix.
        vectors: also return the eigenvectors.

    Returns:
        ``[P]`` ascending float64 numpy eigenvalues, or ``(values, vectors [P, P] float64
        tensor)`` when ``vectors``.
    """
    mat = dense_matrix(op, chunk).double()
    if vectors:
        vals, vecs = torch.linalg.eigh(mat)
        return vals.cpu().numpy(), vecs
    return torch.linalg.eigvalsh(mat).cpu().numpy()


# ----------------------------------------------------------------------------- subspaces


def subspace_overlap(u: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """Cosines of the principal angles between the column spaces of ``u`` and ``v``.

    Args:
        u: ``[P, a]``.
        v: ``[P, b]``.

    Returns:
        ``[min(a, b)]`` float64 in ``[0, 1]``, descending: 1 for shared directions, 0 for
        orthogonal ones (their mean square is ``||Q_u^T Q_v||_F^2 / min(a, b)``).
    """
    if u.dim() != 2 or v.dim() != 2 or u.shape[0] != v.shape[0]:
        raise LandscapeError(f"subspace_overlap: shapes {tuple(u.shape)} and {tuple(v.shape)} "
                             "must be [P, a] and [P, b]")
    qu, _ = torch.linalg.qr(u.double())
    qv, _ = torch.linalg.qr(v.to(u.device).double())
    cos = torch.linalg.svdvals(qu.T @ qv).clamp(0.0, 1.0)
    return cos.cpu().numpy()


# ----------------------------------------------------------------------------- binning


def signed_log(x, linthresh: float) -> np.ndarray:
    """``sign(x) log10(1 + |x| / linthresh)``: linear within ``+-linthresh``, log beyond.

    The axis on which spectra with a bulk at 0, negative outliers and top eigenvalues
    decades apart are binned and drawn; :func:`signed_log_inverse` undoes it.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log10(1.0 + np.abs(x) / linthresh)


def signed_log_inverse(t, linthresh: float) -> np.ndarray:
    """The eigenvalue at signed-log coordinate ``t`` (inverse of :func:`signed_log`)."""
    t = np.asarray(t, dtype=np.float64)
    return np.sign(t) * linthresh * (10.0 ** np.abs(t) - 1.0)


def density_in_bins(nodes, weights, edges, sigma: float, transform=None,
                    dim: int | None = None) -> np.ndarray:
    """The SLQ spectral measure integrated over bins.

    Each quadrature node of each run is spread as a Gaussian of width ``sigma`` in the
    coordinates of ``transform`` (the identity by default; e.g. :func:`signed_log`, so the
    smoothing is relative where the axis is logarithmic) and integrated exactly over each
    bin; the runs are averaged. The result is the share of the spectrum in each bin (it sums
    to 1 where the bins cover the smoothed measure), or with ``dim`` the estimated number of
    eigenvalues per bin.

    Args:
        nodes: ``[runs, m]`` (or ``[m]``) quadrature nodes (:class:`SLQResult`).
        weights: the same shape, each run's weights summing to 1.
        edges: ``[bins + 1]`` increasing bin edges (eigenvalue units).
        sigma: the Gaussian's width in transformed coordinates (> 0).
        transform: a monotone map of eigenvalues to the smoothing coordinate.
        dim: the operator dimension P, to count eigenvalues instead of shares.

    Returns:
        ``[bins]`` shares (or counts).
    """
    from scipy.special import ndtr

    x = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if x.shape != w.shape:
        raise LandscapeError(f"SLQ nodes {x.shape} and weights {w.shape} differ in shape")
    if not sigma > 0:
        raise LandscapeError(f"density_in_bins: sigma must be > 0, got {sigma}")
    f = transform or (lambda v: np.asarray(v, dtype=np.float64))
    t_edges, t_nodes = f(np.asarray(edges, dtype=np.float64)), f(x.ravel())
    cdf = ndtr((t_edges[:, None] - t_nodes[None, :]) / sigma)  # [bins+1, runs*m]
    mass = np.diff(cdf, axis=0) @ (w.ravel() / x.shape[0])
    return mass * dim if dim else mass

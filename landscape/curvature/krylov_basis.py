"""Where a Krylov basis lives: rows of P floats in memory, or in a temporary file.

:func:`landscape.curvature.spectral.lanczos` keeps every Krylov vector to re-orthogonalise against
it. For a model of ``P`` parameters that is ``m P`` floats: 20 vectors of a 10M-parameter
model in float32 are 870 MiB, more than three times what one training step of such a
model holds. :class:`MemoryBasis` keeps the rows in memory (tensors of
:data:`BASIS_BLOCK` rows, on the operator's device); :class:`FileBasis` writes them to an
unnamed temporary file and streams them back one row (or one slice of every row) at a
time, so the process holds a single row beside the operator. Every operation Lanczos needs
is one sweep over the rows:

* ``project(w)``: ``w <- w - Q Q^T w`` in place, returning the coefficients;
* ``subtract(w, c)``: ``w <- w - Q[:, :len(c)] c`` in place;
* ``rewrite(s)``: the thick restart, rows ``<- S^T Q`` in place;
* ``combine(s)``: the Ritz vectors ``Q S`` as a new ``[P, c]`` tensor.

The memory store projects by classical Gram-Schmidt (all coefficients from one ``Q^T w``,
then one update); the file store by modified Gram-Schmidt (row after row: one read of
each row per pass instead of two). In exact arithmetic the two agree; both are applied
twice where one pass cancelled (see ``_Krylov._orthogonalise``).

The file is read with ``os.preadv`` into one reused buffer (not mapped), so its pages are
the kernel's page cache, which the kernel drops under memory pressure, and not the
process's memory. Reading 20 rows of 11M floats from the page cache takes about 0.3 s on
the machine of ``BENCHMARKS.md``, against about 1.5 s for one Hessian-vector product of
that model.
"""

from __future__ import annotations

import os
import tempfile

import torch

from landscape.errors import LandscapeError

BASIS_BLOCK = 32
"""Rows per tensor of a :class:`MemoryBasis`: it grows a block at a time, never copied, so
a basis of ``m`` vectors holds ``m P`` floats (rounded up to a block, or to the basis's
capacity where that is smaller) and no more."""

ROWS_PER_SWEEP = 1 << 16
"""Entries of each row handled at a time by ``rewrite`` and ``combine`` (a
``[rows, 65536]`` temporary, never a second basis)."""

SPILL_BYTES = 256 * 2**20
"""A capped basis larger than this goes to a temporary file under ``storage="auto"``
(CPU operators only: see :func:`choose_storage`)."""


def choose_storage(storage: str, capacity: int | None, dim: int, dtype: torch.dtype,
                   device: torch.device, rows: int | None = None) -> str:
    """``"memory"`` or ``"file"`` for a basis of at most ``capacity`` rows of ``dim`` entries.

    ``"auto"`` writes to a file only a basis whose rows are bounded (a cap ``capacity``, or
    ``rows``, the most an uncapped run can take: its steps) and larger than
    :data:`SPILL_BYTES`, of an operator on the CPU: there the file's pages are the page
    cache, which costs a copy per row read (cheap beside a Hessian-vector product of such
    a model). On a GPU the rows would cross the bus at every step, so ``"auto"`` keeps them
    in device memory; ``"file"`` there is allowed, and slow.

    Raises:
        LandscapeError: an unknown ``storage``.
    """
    if storage not in ("auto", "memory", "file"):
        raise LandscapeError(f"lanczos: basis_storage={storage!r}; give 'auto', 'memory' "
                             "or 'file'")
    if storage != "auto":
        return storage
    bound = capacity if capacity is not None else rows
    item = torch.empty(0, dtype=dtype).element_size()
    big = bound is not None and bound * dim * item > SPILL_BYTES
    return "file" if big and torch.device(device).type == "cpu" else "memory"


class MemoryBasis:
    """The rows of a Krylov basis in memory, :data:`BASIS_BLOCK` rows per tensor.

    Args:
        dim: entries per row.
        dtype: dtype of the rows.
        device: device of the rows.
        capacity: the most rows ever held (None: as many as ``dim``).
    """

    kind = "memory"

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device,
                 capacity: int | None = None):
        self.dim, self.dtype, self.device, self.capacity = dim, dtype, device, capacity
        self.m = 0
        self._blocks: list[torch.Tensor] = []

    def append(self, q: torch.Tensor) -> None:
        """Store ``q`` as row ``m``."""
        i, j = divmod(self.m, BASIS_BLOCK)
        if i == len(self._blocks):  # a new block; the old ones are never copied
            rows = min(BASIS_BLOCK, self.dim - self.m)
            if self.capacity is not None:
                rows = min(rows, self.capacity - self.m)
            self._blocks.append(torch.empty(rows, self.dim, dtype=self.dtype,
                                            device=self.device))
        self._blocks[i][j] = q
        self.m += 1

    def _views(self) -> list[torch.Tensor]:
        """The used rows, block by block (``[<= BASIS_BLOCK, P]`` views).

        Rows, not columns: every vector is contiguous, so writing one and the products
        ``Q^T w`` and ``w - Q c`` stream through memory (a column layout made them strided,
        2-3x slower than the Hessian product itself at P = 1e6).
        """
        return [b[: self.m - i * BASIS_BLOCK] for i, b in enumerate(self._blocks)
                if i * BASIS_BLOCK < self.m]  # blocks past m are empty after a rewrite

    def row(self, i: int) -> torch.Tensor:
        """Row ``i`` (a view: do not modify it)."""
        return self._blocks[i // BASIS_BLOCK][i % BASIS_BLOCK]

    def project(self, w: torch.Tensor) -> torch.Tensor:
        """``w <- w - Q Q^T w`` (classical Gram-Schmidt, in place); returns ``Q^T w`` ``[m]``."""
        views = self._views()
        coef = torch.cat([v @ w for v in views])
        for v, c in zip(views, torch.split(coef, [v.shape[0] for v in views])):
            w.addmv_(v.T, c, alpha=-1.0)  # in place: one sweep of the block, no temporaries
        return coef

    def subtract(self, w: torch.Tensor, coef: torch.Tensor) -> None:
        """``w <- w - sum_i coef_i q_i`` over the first ``len(coef)`` rows, in place."""
        for v, c in zip(self._views(), torch.split(coef, BASIS_BLOCK)):
            w.addmv_(v[: c.shape[0]].T, c, alpha=-1.0)

    def rewrite(self, coef: torch.Tensor) -> None:
        """Rows ``<- coef^T Q`` in place (``coef`` ``[m, l]``); the basis then has ``l`` rows."""
        views, n_kept = self._views(), coef.shape[1]
        rows = torch.split(coef, [v.shape[0] for v in views])
        for lo in range(0, self.dim, ROWS_PER_SWEEP):
            hi = min(lo + ROWS_PER_SWEEP, self.dim)
            y = sum(c.T @ v[:, lo:hi] for c, v in zip(rows, views))  # [l, hi - lo]
            for i in range(0, n_kept, BASIS_BLOCK):
                self._blocks[i // BASIS_BLOCK][: min(BASIS_BLOCK, n_kept - i), lo:hi] = \
                    y[i : i + BASIS_BLOCK]
        self.m = n_kept

    def combine(self, s: torch.Tensor) -> torch.Tensor:
        """``Q S`` ``[P, c]`` for ``s`` ``[m, c]``, a new tensor.

        A capped basis (a large problem) writes it :data:`ROWS_PER_SWEEP` entries at a
        time, so that no ``[c, P]`` temporary sits beside the result and the basis.
        """
        out = torch.zeros(s.shape[1], self.dim, dtype=self.dtype, device=self.device)
        views = self._views()
        rows = [s[i * BASIS_BLOCK : i * BASIS_BLOCK + v.shape[0]] for i, v in enumerate(views)]
        if self.capacity is not None:
            for lo in range(0, self.dim, ROWS_PER_SWEEP):
                hi = min(lo + ROWS_PER_SWEEP, self.dim)
                for c, v in zip(rows, views):
                    out[:, lo:hi].addmm_(c.T, v[:, lo:hi])
            return out.T
        for c, v in zip(rows, views):
            out += c.T @ v
        return out.T

    def close(self) -> None:
        """Release the rows."""
        self._blocks, self.m = [], 0


class FileBasis:
    """The rows of a Krylov basis in an unnamed temporary file, streamed one at a time.

    The file is created with :func:`tempfile.TemporaryFile` in ``directory`` (default:
    the system's temporary directory, ``TMPDIR``), so it has no name and disappears when
    closed or when the process ends, however it ends. The process holds one row (the read
    buffer) and, in ``rewrite`` and ``combine``, a slice of every row.

    Args:
        dim: entries per row.
        dtype: dtype of the rows.
        device: device of the vectors it is used with (rows are read to the CPU, then
            moved there).
        capacity: the most rows ever held (checked against the free disk space).
        directory: where to create the file.

    Raises:
        LandscapeError: the directory cannot hold the file (missing, not writable, or
            less free space than ``capacity`` rows).
    """

    kind = "file"

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device,
                 capacity: int | None = None, directory: str | None = None):
        self.dim, self.dtype, self.device, self.capacity = dim, dtype, device, capacity
        self.m = 0
        self._item = torch.empty(0, dtype=dtype).element_size()
        self._row_bytes = dim * self._item
        where = directory or tempfile.gettempdir()
        need = (capacity or dim) * self._row_bytes
        try:
            free = os.statvfs(where).f_bavail * os.statvfs(where).f_frsize
            if need > free:
                raise LandscapeError(
                    f"lanczos: the Krylov basis needs {need / 2**20:.0f} MiB of disk in {where} "
                    f"and only {free / 2**20:.0f} MiB are free; set TMPDIR elsewhere or use "
                    "basis_storage='memory'")
            self._file = tempfile.TemporaryFile(dir=where)
        except OSError as e:
            raise LandscapeError(f"lanczos: cannot create the Krylov basis file in {where}: "
                                 f"{e.strerror or e}") from None
        self._fd = self._file.fileno()
        self._buf = torch.empty(dim, dtype=dtype)  # the one row read at a time

    # -- raw I/O ------------------------------------------------------------------

    def _io(self, fn, t: torch.Tensor, offset: int) -> None:
        """Read into (``os.preadv``) or write from (``os.pwrite``) the CPU tensor ``t``."""
        mv = memoryview(t.view(torch.uint8).numpy()).cast("B")
        done = 0
        while done < len(mv):  # a single call moves at most about 2 GiB
            try:
                n = fn(mv[done:], offset + done)
            except OSError as e:
                raise LandscapeError(f"lanczos: I/O on the Krylov basis file failed: "
                                     f"{e.strerror or e}") from None
            if n <= 0:
                raise LandscapeError("lanczos: the Krylov basis file ended early")
            done += n

    def _read(self, t: torch.Tensor, offset: int) -> None:
        self._io(lambda mv, off: os.preadv(self._fd, [mv], off), t, offset)

    def _write(self, t: torch.Tensor, offset: int) -> None:
        self._io(lambda mv, off: os.pwrite(self._fd, mv, off), t, offset)

    def _rows(self):
        """Yield each used row in turn (the shared buffer, on the operator's device)."""
        for i in range(self.m):
            self._read(self._buf, i * self._row_bytes)
            yield self._buf.to(self.device)

    def _slices(self, lo: int, hi: int, n: int) -> torch.Tensor:
        """``[n, hi - lo]``: entries ``lo:hi`` of the first ``n`` rows (a new CPU tensor)."""
        out = torch.empty(n, hi - lo, dtype=self.dtype)
        for i in range(n):
            self._read(out[i], i * self._row_bytes + lo * self._item)
        return out

    # -- the interface ------------------------------------------------------------

    def append(self, q: torch.Tensor) -> None:
        """Store ``q`` as row ``m``."""
        self._write(q.detach().to("cpu", self.dtype).contiguous(), self.m * self._row_bytes)
        self.m += 1

    def row(self, i: int) -> torch.Tensor:
        """Row ``i`` (read into the shared buffer: valid until the next read)."""
        self._read(self._buf, i * self._row_bytes)
        return self._buf.to(self.device)

    def project(self, w: torch.Tensor) -> torch.Tensor:
        """``w <- w - Q Q^T w`` by modified Gram-Schmidt, in place; returns the coefficients.

        One read of each row: ``c_i = q_i . w`` and ``w <- w - c_i q_i`` before the next.
        """
        coef = torch.empty(self.m, dtype=self.dtype, device=w.device)
        for i, q in enumerate(self._rows()):
            c = q @ w
            w.add_(q, alpha=-float(c))
            coef[i] = c
        return coef

    def subtract(self, w: torch.Tensor, coef: torch.Tensor) -> None:
        """``w <- w - sum_i coef_i q_i`` over the first ``len(coef)`` rows, in place."""
        for i, q in enumerate(self._rows()):
            if i >= coef.shape[0]:
                break
            w.add_(q, alpha=-float(coef[i]))

    def rewrite(self, coef: torch.Tensor) -> None:
        """Rows ``<- coef^T Q`` in place (``coef`` ``[m, l]``); the basis then has ``l`` rows."""
        c = coef.to("cpu")
        for lo in range(0, self.dim, ROWS_PER_SWEEP):
            hi = min(lo + ROWS_PER_SWEEP, self.dim)
            y = c.T @ self._slices(lo, hi, self.m)  # read all rows' slice before writing it
            for i in range(y.shape[0]):
                self._write(y[i], i * self._row_bytes + lo * self._item)
        self.m = coef.shape[1]

    def combine(self, s: torch.Tensor) -> torch.Tensor:
        """``Q S`` ``[P, c]`` for ``s`` ``[m, c]``, a new tensor on the operator's device."""
        c = s.to("cpu")
        out = torch.zeros(s.shape[1], self.dim, dtype=self.dtype, device=self.device)
        for lo in range(0, self.dim, ROWS_PER_SWEEP):
            hi = min(lo + ROWS_PER_SWEEP, self.dim)
            out[:, lo:hi] = (c.T @ self._slices(lo, hi, self.m)).to(self.device)
        return out.T

    def close(self) -> None:
        """Close (and so delete) the file."""
        self._file.close()
        self.m = 0


def make_basis(storage: str, dim: int, dtype: torch.dtype, device: torch.device,
               capacity: int | None, directory: str | None = None, rows: int | None = None):
    """A :class:`MemoryBasis` or :class:`FileBasis` for :func:`choose_storage`'s answer.

    ``rows``: the most rows an uncapped basis can take (its file is sized by it).
    """
    kind = choose_storage(storage, capacity, dim, dtype, device, rows)
    if kind == "file":
        return FileBasis(dim, dtype, device, capacity if capacity is not None else rows,
                         directory)
    return MemoryBasis(dim, dtype, device, capacity)


__all__ = ["BASIS_BLOCK", "ROWS_PER_SWEEP", "SPILL_BYTES", "FileBasis", "MemoryBasis",
           "choose_storage", "make_basis"]

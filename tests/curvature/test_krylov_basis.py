"""The two Krylov basis stores against dense float64 algebra, and where a basis goes."""

import numpy as np
import pytest
import torch

import landscape.curvature.krylov_basis as kb
from landscape.errors import LandscapeError

CPU, F64 = torch.device("cpu"), torch.float64
DIM, M = 23, 10


@pytest.fixture(params=["memory", "memory_capped", "file"])
def basis(request, monkeypatch, tmp_path):
    """A store of ``M`` orthonormal rows, with blocks and sweeps smaller than the problem."""
    monkeypatch.setattr(kb, "BASIS_BLOCK", 4)  # 10 rows in 3 blocks
    monkeypatch.setattr(kb, "ROWS_PER_SWEEP", 7)  # 23 entries in 4 sweeps
    if request.param == "file":
        b = kb.FileBasis(DIM, F64, CPU, capacity=M, directory=str(tmp_path))
    else:
        b = kb.MemoryBasis(DIM, F64, CPU, capacity=M if request.param.endswith("capped")
                           else None)
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, M)))[0].T  # [M, P] rows
    for row in q:
        b.append(torch.tensor(row))
    yield b, q
    b.close()


def test_rows_come_back_as_stored(basis):
    b, q = basis
    assert b.m == M
    for i in (0, 3, 4, 9):
        np.testing.assert_array_equal(b.row(i).numpy(), q[i])


def test_project_removes_the_span_and_returns_the_coefficients(basis):
    b, q = basis
    w0 = np.random.default_rng(1).normal(size=DIM)
    w = torch.tensor(w0)
    coef = b.project(w)
    np.testing.assert_allclose(coef.numpy(), q @ w0, atol=1e-12)
    np.testing.assert_allclose(w.numpy(), w0 - q.T @ (q @ w0), atol=1e-12)
    np.testing.assert_allclose(q @ w.numpy(), 0, atol=1e-12)


def test_subtract_uses_only_the_first_rows(basis):
    b, q = basis
    w0, c = np.random.default_rng(2).normal(size=DIM), np.arange(1.0, 7.0)
    w = torch.tensor(w0)
    b.subtract(w, torch.tensor(c))
    np.testing.assert_allclose(w.numpy(), w0 - q[:6].T @ c, atol=1e-12)


def test_combine_is_q_times_s_and_leaves_the_rows(basis):
    b, q = basis
    s = np.random.default_rng(3).normal(size=(M, 3))
    out = b.combine(torch.tensor(s))
    assert out.shape == (DIM, 3)
    np.testing.assert_allclose(out.numpy(), q.T @ s, atol=1e-12)
    np.testing.assert_array_equal(b.row(9).numpy(), q[9])


def test_rewrite_is_the_thick_restart_in_place(basis):
    b, q = basis
    c = np.random.default_rng(4).normal(size=(M, 5))
    b.rewrite(torch.tensor(c))
    assert b.m == 5
    want = c.T @ q  # [5, P]
    for i in range(5):
        np.testing.assert_allclose(b.row(i).numpy(), want[i], atol=1e-12)
    b.append(torch.tensor(q[0]))  # the basis grows again after a restart
    assert b.m == 6
    np.testing.assert_array_equal(b.row(5).numpy(), q[0])
    np.testing.assert_allclose(b.combine(torch.eye(6, dtype=F64)).numpy().T,
                               np.vstack([want, q[:1]]), atol=1e-12)


def test_a_file_basis_is_unnamed_and_closes_empty(tmp_path):
    b = kb.FileBasis(DIM, F64, CPU, capacity=3, directory=str(tmp_path))
    b.append(torch.ones(DIM, dtype=F64))
    assert list(tmp_path.iterdir()) == []  # nothing to clean up after a kill
    b.close()
    assert b.m == 0


def test_a_file_basis_needs_a_folder_with_room(tmp_path, monkeypatch):
    with pytest.raises(LandscapeError, match="cannot create the Krylov basis file"):
        kb.FileBasis(DIM, F64, CPU, capacity=3, directory=str(tmp_path / "missing"))

    class Full:
        f_bavail, f_frsize = 1, 1024

    monkeypatch.setattr(kb.os, "statvfs", lambda _: Full())
    with pytest.raises(LandscapeError, match="MiB are free"):
        kb.FileBasis(10**6, F64, CPU, capacity=3, directory=str(tmp_path))


def test_storage_goes_to_a_file_only_for_a_large_capped_basis_on_the_cpu():
    f32 = torch.float32
    assert kb.choose_storage("auto", 20, 11_000_000, f32, CPU) == "file"  # 840 MiB
    assert kb.choose_storage("auto", 20, 1_100_000, f32, CPU) == "memory"  # 84 MiB
    assert kb.choose_storage("auto", None, 11_000_000, f32, CPU) == "memory"  # never capped
    assert kb.choose_storage("auto", 20, 11_000_000, f32, torch.device("cuda")) == "memory"
    assert kb.choose_storage("file", 3, 10, f32, CPU) == "file"
    assert kb.choose_storage("memory", 20, 11_000_000, f32, CPU) == "memory"
    assert isinstance(kb.make_basis("auto", 10, f32, CPU, 3), kb.MemoryBasis)
    with pytest.raises(LandscapeError, match="basis_storage='disk'"):
        kb.choose_storage("disk", 3, 10, f32, CPU)

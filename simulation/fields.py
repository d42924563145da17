"""Smooth random fields: cubic B-spline displacement and bias fields in millimetres.

Everything here is SIMULATED; the package docstring says how and why.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A field of i.i.d. N(0, s^2) coefficients has RMS s * sqrt(_BSPLINE_POWER) per axis.
_BSPLINE_POWER = 151.0 / 315.0


# --------------------------------------------------------------------------------------
# Smooth random fields
# --------------------------------------------------------------------------------------


def _bspline_basis(positions: np.ndarray, node_spacing: float, n_nodes: int) -> np.ndarray:
    """Cubic B-spline weights, shape (len(positions), n_nodes), float32.

    Node ``j`` sits at ``(j - 1) * node_spacing``; positions are in the same unit. Inside
    the node span the weights sum to 1 (a partition of unity):

    >>> weights = _bspline_basis(np.array([0.0, 5.0, 10.0]), node_spacing=10.0, n_nodes=4)
    >>> np.round(weights.sum(axis=1), 6).tolist()
    [1.0, 1.0, 1.0]
    >>> np.round(weights[0] * 6, 6).tolist()  # 1/6, 2/3, 1/6 on the nodes around position 0
    [1.0, 4.0, 1.0, 0.0]
    """
    t = np.abs(positions[:, None] / node_spacing - (np.arange(n_nodes)[None, :] - 1.0))
    weights = np.where(
        t < 1.0,
        2.0 / 3.0 - t**2 + 0.5 * t**3,
        np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0),
    )
    return weights.astype(np.float32)


def _n_nodes(extent: float, node_spacing: float) -> int:
    """Nodes needed so that every position in [0, extent] has its four B-spline nodes."""
    return int(np.floor(extent / node_spacing)) + 4


def _spline_field(coefficients: np.ndarray, bases: Sequence[np.ndarray]) -> np.ndarray:
    """Evaluate a tensor-product spline: ``sum_abc c[a, b, c] Bx[i, a] By[j, b] Bz[k, c]``."""
    bx, by, bz = bases
    c = coefficients.astype(np.float32)
    out = c.reshape(-1, c.shape[2]) @ bz.T  # (a*b, k)
    out = by @ out.reshape(c.shape[0], c.shape[1], -1)  # (a, j, k), batched over a
    out = bx @ out.reshape(c.shape[0], -1)  # (i, j*k)
    return out.reshape(bx.shape[0], by.shape[0], bz.shape[0])


def _random_fields(
    rng: np.random.Generator,
    axis_positions: Sequence[np.ndarray],
    axis_extents: Sequence[float],
    node_spacing: float,
    rms: float,
    count: int,
) -> tuple[list[np.ndarray], float]:
    """``count`` smooth Gaussian fields of about ``rms`` RMS, as cubic B-splines [2]_.

    Returns the fields (float32, shape ``tuple(len(p) for p in axis_positions)``) and a
    bound on their absolute value (B-spline weights are >= 0 and sum to 1).
    """
    n_nodes = [_n_nodes(extent, node_spacing) for extent in axis_extents]
    bases = [_bspline_basis(positions, node_spacing, n) for positions, n in zip(axis_positions, n_nodes, strict=True)]
    scale = rms / _BSPLINE_POWER ** (len(n_nodes) / 2.0)
    fields, bound = [], 0.0
    for _ in range(count):
        coefficients = rng.standard_normal(n_nodes) * scale
        bound = max(bound, float(np.abs(coefficients).max()))
        fields.append(_spline_field(coefficients, bases))
    return fields, bound


def _voxel_fields(
    rng: np.random.Generator,
    shape: Sequence[int],
    node_spacing: float,
    rms: float,
    count: int,
) -> list[np.ndarray]:
    """Smooth fields in voxel units on a grid of ``shape`` (node spacing in voxels)."""
    positions = [np.arange(n, dtype=np.float64) for n in shape]
    extents = [float(n - 1) for n in shape]
    fields, _ = _random_fields(rng, positions, extents, node_spacing, rms, count)
    return fields

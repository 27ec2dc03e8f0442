"""Bures–Wasserstein state space: Gaussians N(m, Sigma) (WFM §2.3.1, §3.1, Algorithm 2, App. C).

A Gaussian travels through flowzoo as one array of event shape `(D + 1, D)`:
row 0 is the mean m, rows 1..D the covariance Sigma (`pack_gaussians`,
`unpack_gaussians`). Tangent vectors (a, S), a in R^D and S symmetric, use
the same layout (row 0 = a, rows 1..D = S).

Closed forms (WFM §2.3.1, following Lambert et al. 2022):
  * OT map A -> B: x -> m_B + C (x - m_A),
    C = A^-1/2 (A^1/2 B A^1/2)^1/2 A^-1/2                                  (Gelbrich)
  * McCann interpolation: m_t = (1 - t) m_0 + t m_1,
    Sigma_t = T_t A T_t, T_t = (1 - t) I + t C                             (Eq. 8)
  * Euclidean derivative Sigma'^E = S Sigma_t + Sigma_t S for S = Sigma'^BW (Eq. 9)
  * Riemannian velocity m' = m_1 - m_0, Sigma'^BW = (C - I) T_t^-1         (Eq. 10)
  * tangent norm at N(m, Sigma): |a|^2 + Tr(S^2 Sigma)
  * W2^2 (Fréchet) between Gaussians                                       (App. C, Eq. 24)
  * generation step Sigma <- U Sigma U, U = I + h S, m <- m + h a          (Algorithm 2)

C and T_t commute (T_t is a polynomial in C), so Eq. 10 is evaluated in C's
eigenbasis: Sigma'^BW = V diag((c - 1) / (1 - t + t c)) V^T, exactly
symmetric and without a matrix inverse. Algorithm 2 is registered as the
solver "euler_bw" (`integrate(..., solver="euler_bw")`); its velocity
function returns tangent vectors (a, S), not Euclidean derivatives.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from flowzoo.registry import SOLVERS


# -- packing and validation --------------------------------------------------------------
def pack_gaussians(m: jax.Array, cov: jax.Array) -> jax.Array:
  """Means `[..., D]` and covariances `[..., D, D]` -> `[..., D + 1, D]`."""
  if cov.shape[-2:] != (m.shape[-1], m.shape[-1]) or cov.shape[:-2] != m.shape[:-1]:
    raise ValueError(f"pack_gaussians: means {tuple(m.shape)} and covariances "
                     f"{tuple(cov.shape)} do not match (need [..., D] and [..., D, D]).")
  xp = np if isinstance(m, np.ndarray) and isinstance(cov, np.ndarray) else jnp
  return xp.concatenate([m[..., None, :], cov], axis=-2)


def unpack_gaussians(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`[..., D + 1, D]` -> (means `[..., D]`, covariances `[..., D, D]`)."""
  if x.ndim < 2 or x.shape[-2] != x.shape[-1] + 1:
    raise ValueError(f"unpack_gaussians: expected Gaussians of event shape (D + 1, D), got "
                     f"array of shape {tuple(x.shape)}.")
  return x[..., 0, :], x[..., 1:, :]


def check_gaussians(m: np.ndarray, cov: np.ndarray, what: str = "Gaussians", *,
                    min_eig: float = 0.0, sym_tol: float = 1e-4) -> None:
  """Raises ValueError unless `cov` `[n, D, D]` are symmetric positive definite.

  Args:
    m: `[n, D]` means; cov: `[n, D, D]` covariances.
    what: names the data in the message (e.g. "condition 'spiral'").
    min_eig: smallest eigenvalue accepted (relative to the largest one of the matrix).
  """
  m, cov = np.asarray(m), np.asarray(cov)
  if m.ndim != 2 or cov.ndim != 3 or cov.shape != (m.shape[0], m.shape[1], m.shape[1]):
    raise ValueError(f"{what}: means must be [n, D] and covariances [n, D, D]; got "
                     f"{m.shape} and {cov.shape}.")
  for name, a in (("means", m), ("covariances", cov)):
    bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(1))
    if bad.size:
      raise ValueError(f"{what}: {name} of sample {bad[0]} contain NaN/inf.")
  scale = np.maximum(np.abs(cov).max(axis=(1, 2)), 1e-30)
  asym = np.abs(cov - np.swapaxes(cov, 1, 2)).max(axis=(1, 2)) / scale
  if (asym > sym_tol).any():
    i = int(np.argmax(asym))
    raise ValueError(f"{what}: covariance of sample {i} is not symmetric "
                     f"(relative asymmetry {asym[i]:.2e}).")
  eig = np.linalg.eigvalsh(0.5 * (cov + np.swapaxes(cov, 1, 2)).astype(np.float64))
  bad = np.flatnonzero(eig[:, 0] <= min_eig * eig[:, -1])
  if bad.size:
    i = bad[0]
    raise ValueError(f"{what}: covariance of sample {i} is not positive definite "
                     f"(smallest eigenvalue {eig[i, 0]:.3e}, largest {eig[i, -1]:.3e}).")


# -- matrix functions (symmetric inputs, via eigh) -----------------------------------------
def sym(a: jax.Array) -> jax.Array:
  return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _eig_fn(a: jax.Array, fn) -> jax.Array:
  w, v = jnp.linalg.eigh(sym(a))
  return jnp.einsum("...ij,...j,...kj->...ik", v, fn(w), v)


def sqrtm(a: jax.Array) -> jax.Array:
  """Principal square root of PSD matrices `[..., D, D]` (negative eigenvalues clipped)."""
  return _eig_fn(a, lambda w: jnp.sqrt(jnp.maximum(w, 0.0)))


def project_psd(a: jax.Array, rel_floor: float = 1e-4) -> jax.Array:
  """Nearest SPD matrix: symmetrise, clip eigenvalues at rel_floor * mean |eigenvalue|.

  The baselines' Euclidean flows leave the SPD cone (WFM §4.1); the floor keeps
  the result invertible so that W2 and the OT map stay defined.
  """
  w, v = jnp.linalg.eigh(sym(a))
  floor = rel_floor * jnp.maximum(jnp.mean(jnp.abs(w), -1, keepdims=True), 1e-12)
  return jnp.einsum("...ij,...j,...kj->...ik", v, jnp.maximum(w, floor), v)


def ot_map_matrix(a: jax.Array, b: jax.Array) -> jax.Array:
  """C = A^-1/2 (A^1/2 B A^1/2)^1/2 A^-1/2, the linear part of the OT map A -> B `[..., D, D]`."""
  w, v = jnp.linalg.eigh(sym(a))
  w = jnp.maximum(w, 1e-12)
  a_half = jnp.einsum("...ij,...j,...kj->...ik", v, jnp.sqrt(w), v)
  a_mhalf = jnp.einsum("...ij,...j,...kj->...ik", v, 1.0 / jnp.sqrt(w), v)
  return sym(a_mhalf @ sqrtm(a_half @ b @ a_half) @ a_mhalf)


# -- geodesics and velocities --------------------------------------------------------------
def _bt(t: jax.Array, ndim_extra: int) -> jax.Array:
  return jnp.asarray(t).reshape(jnp.shape(t) + (1,) * ndim_extra)


def mccann(m0, cov0, m1, cov1, t):
  """McCann interpolation between N(m0, cov0) and N(m1, cov1) (Eq. 8).

  Args:
    m0, m1: `[B, D]`; cov0, cov1: `[B, D, D]` (SPD); t: `[B]`.
  Returns:
    (m_t `[B, D]`, Sigma_t `[B, D, D]`, C `[B, D, D]` the OT map matrix).
  """
  c = ot_map_matrix(cov0, cov1)
  eye = jnp.eye(cov0.shape[-1], dtype=cov0.dtype)
  tt = _bt(t, 2)
  tmat = (1 - tt) * eye + tt * c
  mt = (1 - _bt(t, 1)) * m0 + _bt(t, 1) * m1
  return mt, sym(tmat @ cov0 @ tmat), c


def riemannian_velocity(m0, m1, c, t):
  """(m', Sigma'^BW) = (m1 - m0, (C - I) ((1 - t) I + t C)^-1) (Eq. 10).

  Args:
    m0, m1: `[B, D]`; c: `[B, D, D]` OT map matrix from `mccann`; t: `[B]` in [0, 1].
  """
  w, v = jnp.linalg.eigh(sym(c))
  tt = _bt(t, 1)
  scale = (w - 1.0) / ((1 - tt) + tt * w)  # C SPD: the denominator is > 0 on [0, 1].
  return m1 - m0, jnp.einsum("...ij,...j,...kj->...ik", v, scale, v)


def euclidean_derivative(s: jax.Array, cov_t: jax.Array) -> jax.Array:
  """Sigma'^E = S Sigma_t + Sigma_t S for the Riemannian S (Eq. 9)."""
  return s @ cov_t + cov_t @ s


def tangent_sq_norm(a: jax.Array, s: jax.Array, cov: jax.Array) -> jax.Array:
  """||(a, S)||^2_BW = |a|^2 + Tr(S^2 Sigma) at N(., Sigma), `[B]` (WFM §2.3.1).

  Written Tr(S Sigma S) (equal by cyclicity): a sum of non-negative terms when
  Sigma is PSD and S symmetric.
  """
  return jnp.sum(a * a, -1) + jnp.einsum("...ij,...jk,...ki->...", s, cov, s)


def frobenius_sq_norm(a: jax.Array, s: jax.Array) -> jax.Array:
  """|a|^2 + ||S||_F^2, `[B]` (Frobenius FM baseline, WFM §4.1)."""
  return jnp.sum(a * a, -1) + jnp.sum(s * s, (-2, -1))


# -- distances -----------------------------------------------------------------------------
def w2_sq(m0, cov0, m1, cov1) -> jax.Array:
  """W2^2 between paired Gaussians `[B]` (Eq. 24 for matched rows)."""
  r0 = sqrtm(cov0)
  cross = jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(sym(r0 @ cov1 @ r0)), 0.0)), -1)
  tr = jnp.trace(cov0, axis1=-2, axis2=-1) + jnp.trace(cov1, axis1=-2, axis2=-1)
  return jnp.maximum(jnp.sum((m0 - m1) ** 2, -1) + tr - 2.0 * cross, 0.0)


def frechet_cost(x0: jax.Array, x1: jax.Array) -> jax.Array:
  """All-pairs W2^2 `[n, m]` between packed Gaussians `[n, D+1, D]`, `[m, D+1, D]` (Eq. 24).

  Usable as a coupling's `cost_fn(x0, x1)`.
  """
  m0, c0 = unpack_gaussians(x0)
  m1, c1 = unpack_gaussians(x1)
  if m0.shape[-1] != m1.shape[-1]:
    raise ValueError(f"frechet_cost: Gaussians of dimension {m0.shape[-1]} vs {m1.shape[-1]}.")
  return frechet_cost_moments(m0, c0, m1, c1)


def frechet_cost_moments(m0: jax.Array, c0: jax.Array, m1: jax.Array,
                         c1: jax.Array) -> jax.Array:
  """W2^2 between all pairs of Gaussians given by moments (WFM App. C, Eq. 24).

  Args:
    m0, c0: `[n, D]` means and `[n, D, D]` covariances; m1, c1 likewise `[m, ...]`.
  Returns:
    `[n, m]`: |a_i - b_j|^2 + Tr(A_i + B_j - 2 (A_i^1/2 B_j A_i^1/2)^1/2).
  """
  r0 = sqrtm(c0)
  cross = jnp.einsum("nij,mjk,nkl->nmil", r0, c1, r0)
  tr_cross = jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(sym(cross)), 0.0)), -1)
  tr0, tr1 = jnp.trace(c0, axis1=-2, axis2=-1), jnp.trace(c1, axis1=-2, axis2=-1)
  mean_term = jnp.sum((m0[:, None, :] - m1[None, :, :]) ** 2, -1)
  return jnp.maximum(mean_term + tr0[:, None] + tr1[None, :] - 2.0 * tr_cross, 0.0)


def bw_barycenter(cov: jax.Array, num_iters: int = 50) -> jax.Array:
  """Bures–Wasserstein barycentre of covariances `[n, D, D]` (uniform weights).

  Fixed-point iteration of Álvarez-Esteban et al. (2016):
  S <- S^-1/2 (mean_i (S^1/2 Sigma_i S^1/2)^1/2)^2 S^-1/2, from the mean covariance.
  """
  def body(_, s):
    w, v = jnp.linalg.eigh(s)
    w = jnp.maximum(w, 1e-12)
    half = jnp.einsum("ij,j,kj->ik", v, jnp.sqrt(w), v)
    mhalf = jnp.einsum("ij,j,kj->ik", v, 1.0 / jnp.sqrt(w), v)
    m = jnp.mean(sqrtm(half @ cov @ half), 0)
    return sym(mhalf @ m @ m @ mhalf)
  return jax.lax.fori_loop(0, num_iters, body, sym(jnp.mean(cov, 0)))


# -- generation (Algorithm 2) --------------------------------------------------------------
def exp_step(x: jax.Array, tangent: jax.Array, h) -> jax.Array:
  """One step of Algorithm 2: m + h a, U Sigma U with U = I + h S (packed `[B, D+1, D]`).

  U Sigma U is congruent to Sigma, so it stays SPD whenever U is invertible
  (always for h |eig(S)| < 1) — unlike the Euclidean step Sigma + h Sigma'^E.
  """
  m, cov = unpack_gaussians(x)
  a, s = unpack_gaussians(tangent)
  u = jnp.eye(cov.shape[-1], dtype=cov.dtype) + h * sym(s)
  return pack_gaussians(m + h * a, sym(u @ cov @ u)).astype(x.dtype)


@SOLVERS.register("euler_bw")
def bw_euler_step(velocity_fn, t: jax.Array, x: jax.Array, dt: jax.Array) -> jax.Array:
  """Algorithm 2 as a fixed-step solver; `velocity_fn(t, x)` returns tangents (a, S) packed."""
  batch = x.shape[0]
  return exp_step(x, velocity_fn(jnp.broadcast_to(t, (batch,)), x), dt)


# -- evaluation (WFM Table 2) ----------------------------------------------------------------
_frechet_jit = jax.jit(frechet_cost)


# The evaluator scores `bw_min_w2` and `bw_min_w2_cov` on the same arrays one
# after the other; remembering the last answer (keyed by content) halves the
# cost-matrix work, which dominates evaluation on large families (pbmc).
_last_nearest: dict = {}


def _nearest(fake, real, chunk: int, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Per generated Gaussian: min W2^2 to the real ones `[n]` and its argmin `[n]`."""
  fake, real = np.asarray(fake, np.float32), np.asarray(real, np.float32)
  if fake.shape[1:] != real.shape[1:]:
    raise ValueError(f"{name}: generated Gaussians of shape {fake.shape[1:]} vs real "
                     f"{real.shape[1:]}.")
  unpack_gaussians(fake)  # shape check (D + 1, D)
  key = tuple(hashlib.sha1(a.tobytes()).digest() + str(a.shape).encode() for a in (fake, real))
  if _last_nearest.get("key") != key:
    _last_nearest.clear()
    _last_nearest.update(key=key, value=_nearest_uncached(fake, real, chunk))
  return _last_nearest["value"]


def _nearest_uncached(fake: np.ndarray, real: np.ndarray, chunk: int):
  n = len(fake)
  pad = -n % chunk if n > chunk else 0
  fake = np.concatenate([fake, np.repeat(fake[-1:], pad, 0)]) if pad else fake
  step = min(chunk, n)
  costs = [np.asarray(_frechet_jit(jnp.asarray(fake[s:s + step]), jnp.asarray(real)))
           for s in range(0, len(fake), step)]
  cost = np.concatenate(costs)[:n]
  return cost.min(1), cost.argmin(1)


def mean_min_w2(fake, real, *, fake_mask=None, real_mask=None, chunk: int = 256) -> float:
  """Mean over generated Gaussians of the minimum W2^2 to the real ones (WFM Table 2).

  Args:
    fake: `[n, D + 1, D]` generated, real: `[N, D + 1, D]` reference Gaussians.
    fake_mask, real_mask: unused (Gaussians have no padding); accepted for the
      evaluator's structured-metric signature.
    chunk: generated rows per cost-matrix block (the block is `[chunk, N, D, D]`).
  """
  del fake_mask, real_mask
  return float(np.mean(_nearest(fake, real, chunk, "bw_min_w2")[0]))


def mean_min_w2_cov(fake, real, *, fake_mask=None, real_mask=None, chunk: int = 256) -> float:
  """The covariance (Bures^2) part of `mean_min_w2`: W2^2 = |m - m'|^2 + Bures^2(Sigma, Sigma')
  at each generated Gaussian's nearest real one (by W2^2), averaged; shapes as there.

  Why: when the family's covariances are small next to the spread of its means
  (the toy spirals), the mean term dominates Table 2's metric, while the
  geometries of Table 2 differ only in how they move covariances.
  """
  del fake_mask, real_mask
  w2, j = _nearest(fake, real, chunk, "bw_min_w2_cov")
  m_fake = np.asarray(fake, np.float32)[:, 0]
  m_real = np.asarray(real, np.float32)[j, 0]
  return float(np.mean(np.maximum(w2 - np.sum((m_fake - m_real) ** 2, -1), 0.0)))


# Table 2's metrics by name, as `method.metrics()` returns them (BW-FM, its baselines).
METRICS = {"bw_min_w2": mean_min_w2, "bw_min_w2_cov": mean_min_w2_cov}


# -- the geometry interface (same functions as `euclidean`, `pointclouds`) -------------------
def interpolate(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
  """Packed McCann interpolant N(m_t, Sigma_t) `[B, D + 1, D]` (Eq. 8); `t` `[B]`."""
  m0, c0 = unpack_gaussians(x0)
  m1, c1 = unpack_gaussians(x1)
  mt, ct, _ = mccann(m0, c0, m1, c1, t)
  return pack_gaussians(mt, ct)


def target_velocity(x0: jax.Array, x1: jax.Array, t: jax.Array, *,
                    euclidean: bool = False) -> jax.Array:
  """Packed velocity (m', S) `[B, D + 1, D]` of the McCann path at t.

  S = Sigma'^BW (Eq. 10), or with `euclidean` the Euclidean derivative
  Sigma'^E = S Sigma_t + Sigma_t S (Eq. 9; BW-FM (E) and Frobenius FM).
  """
  m0, c0 = unpack_gaussians(x0)
  m1, c1 = unpack_gaussians(x1)
  _, ct, c = mccann(m0, c0, m1, c1, t)
  dm, s = riemannian_velocity(m0, m1, c, t)
  return pack_gaussians(dm, euclidean_derivative(s, ct) if euclidean else s)


def sq_norm(v: jax.Array, x: jax.Array, mask: jax.Array | None = None, *,
            frobenius: bool = False) -> jax.Array:
  """Per-Gaussian squared norm `[B]` of packed tangents `v` at packed Gaussians `x`.

  The BW tangent norm |a|^2 + Tr(S Sigma S) at Sigma (WFM §2.3.1), or with
  `frobenius` |a|^2 + ||S||_F^2 (Frobenius FM, §4.1).
  """
  del mask
  a, s = unpack_gaussians(v)
  if frobenius:
    return frobenius_sq_norm(a, s)
  return tangent_sq_norm(a, s, unpack_gaussians(x)[1])

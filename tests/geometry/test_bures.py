"""Bures–Wasserstein geometry: closed forms vs scipy.linalg.sqrtm, Eq. 8-10, Algorithm 2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from flowzoo.geometry import bures
from flowzoo.registry import SOLVERS
from flowzoo.sampling import integrate



def random_spd(rng, n, d, cond=5.0):
  q = np.linalg.qr(rng.normal(size=(n, d, d)))[0]
  w = rng.uniform(1.0, cond, (n, d)) * rng.uniform(0.2, 2.0, (n, 1))
  return np.einsum("nij,nj,nkj->nik", q, w, q)


def np_ot_matrix(a, b):
  """C = A^-1/2 (A^1/2 B A^1/2)^1/2 A^-1/2 with scipy's sqrtm (float64)."""
  ah = np.real(scipy.linalg.sqrtm(a))
  ahi = np.linalg.inv(ah)
  return ahi @ np.real(scipy.linalg.sqrtm(ah @ b @ ah)) @ ahi


def np_w2(m0, a, m1, b):
  ah = np.real(scipy.linalg.sqrtm(a))
  return np.sum((m0 - m1) ** 2) + np.trace(a + b - 2 * np.real(scipy.linalg.sqrtm(ah @ b @ ah)))


@pytest.fixture
def pair():
  rng = np.random.default_rng(0)
  d = 3
  return (rng.normal(size=(8, d)), random_spd(rng, 8, d), rng.normal(size=(8, d)),
          random_spd(rng, 8, d))


def test_pack_unpack_roundtrip_and_errors():
  m, s = np.ones((4, 3)), np.tile(np.eye(3), (4, 1, 1))
  x = bures.pack_gaussians(m, s)
  assert x.shape == (4, 4, 3)
  m2, s2 = bures.unpack_gaussians(x)
  np.testing.assert_array_equal(m2, m)
  np.testing.assert_array_equal(s2, s)
  with pytest.raises(ValueError, match="do not match"):
    bures.pack_gaussians(np.ones((4, 2)), s)
  with pytest.raises(ValueError, match="D \\+ 1, D"):
    bures.unpack_gaussians(np.ones((4, 3, 3)))


def test_check_gaussians_names_bad_sample():
  m, s = np.zeros((3, 2)), np.tile(np.eye(2), (3, 1, 1))
  bures.check_gaussians(m, s)
  bad = s.copy()
  bad[2] = [[1.0, 2.0], [2.0, 1.0]]  # eigenvalues 3, -1
  with pytest.raises(ValueError, match="sample 2 is not positive definite"):
    bures.check_gaussians(m, bad, "condition 'x'")
  asym = s.copy()
  asym[1, 0, 1] = 0.5
  with pytest.raises(ValueError, match="sample 1 is not symmetric"):
    bures.check_gaussians(m, asym)
  with pytest.raises(ValueError, match="means must be"):
    bures.check_gaussians(np.zeros((3, 3)), s)


def test_ot_map_matches_scipy_and_pushes_forward(pair):
  _, a, _, b = pair
  c = np.asarray(bures.ot_map_matrix(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
  for k in range(len(a)):
    np.testing.assert_allclose(c[k], np_ot_matrix(a[k], b[k]), rtol=2e-3, atol=2e-3)
    # T# N(., A) = N(., B): C A C = B.
    np.testing.assert_allclose(c[k] @ a[k] @ c[k], b[k], rtol=5e-3, atol=5e-3)


def test_mccann_endpoints_and_midpoint(pair):
  m0, a, m1, b = (jnp.asarray(v, jnp.float32) for v in pair)
  for t, (em, ec) in ((0.0, (m0, a)), (1.0, (m1, b))):
    mt, ct, _ = bures.mccann(m0, a, m1, b, jnp.full((8,), t))
    np.testing.assert_allclose(mt, em, atol=1e-5)
    np.testing.assert_allclose(ct, ec, rtol=5e-3, atol=5e-3)
  # Geodesic: W2(mu_0, mu_t) = t W2(mu_0, mu_1) (constant speed).
  t = 0.3
  mt, ct, _ = bures.mccann(m0, a, m1, b, jnp.full((8,), t))
  for k in range(8):
    d01 = np_w2(pair[0][k], pair[1][k], pair[2][k], pair[3][k])
    d0t = np_w2(pair[0][k], pair[1][k], np.asarray(mt[k], np.float64), np.asarray(ct[k], np.float64))
    np.testing.assert_allclose(np.sqrt(d0t), t * np.sqrt(d01), rtol=1e-2)


def test_riemannian_velocity_is_the_derivative(pair):
  """Eq. 10 via Eq. 9: S Sigma_t + Sigma_t S equals the finite-difference dSigma_t/dt."""
  m0, a, m1, b = (jnp.asarray(v, jnp.float32) for v in pair)
  t = jnp.full((8,), 0.4)
  h = 1e-3
  _, ct, c = bures.mccann(m0, a, m1, b, t)
  dm, s = bures.riemannian_velocity(m0, m1, c, t)
  np.testing.assert_allclose(s, np.swapaxes(s, 1, 2), atol=1e-6)  # symmetric tangent
  # Closed form (C - I) T_t^-1 in float64.
  for k in range(8):
    cn = np_ot_matrix(pair[1][k], pair[3][k])
    tt = 0.6 * np.eye(3) + 0.4 * cn
    np.testing.assert_allclose(s[k], (cn - np.eye(3)) @ np.linalg.inv(tt), rtol=5e-3, atol=5e-3)
  _, cp, _ = bures.mccann(m0, a, m1, b, t + h)
  _, cm, _ = bures.mccann(m0, a, m1, b, t - h)
  fd = (np.asarray(cp, np.float64) - np.asarray(cm, np.float64)) / (2 * h)
  np.testing.assert_allclose(bures.euclidean_derivative(s, ct), fd, rtol=3e-2, atol=3e-2)
  np.testing.assert_allclose(dm, m1 - m0)


def test_tangent_norm_closed_form():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(4, 3))
  s = rng.normal(size=(4, 3, 3))
  s = s + np.swapaxes(s, 1, 2)
  cov = random_spd(rng, 4, 3)
  got = bures.tangent_sq_norm(jnp.asarray(a), jnp.asarray(s), jnp.asarray(cov))
  want = [a[k] @ a[k] + np.trace(s[k] @ s[k] @ cov[k]) for k in range(4)]
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # It is the L2(mu) norm of the vector field x -> a + S (x - m) at N(m, cov).
  x = rng.multivariate_normal(np.zeros(3), cov[0], size=200_000)
  mc = np.mean(np.sum((a[0] + x @ s[0]) ** 2, 1))
  np.testing.assert_allclose(got[0], mc, rtol=2e-2)
  # Frobenius differs from it unless Sigma = I.
  fro = bures.frobenius_sq_norm(jnp.asarray(a), jnp.asarray(s))
  eye = jnp.broadcast_to(jnp.eye(3), (4, 3, 3))
  np.testing.assert_allclose(bures.tangent_sq_norm(jnp.asarray(a), jnp.asarray(s), eye), fro,
                             rtol=1e-5)


def test_frechet_cost_matches_scipy(pair):
  m0, a, m1, b = pair
  x0 = bures.pack_gaussians(jnp.asarray(m0[:3], jnp.float32), jnp.asarray(a[:3], jnp.float32))
  x1 = bures.pack_gaussians(jnp.asarray(m1, jnp.float32), jnp.asarray(b, jnp.float32))
  cost = np.asarray(bures.frechet_cost(x0, x1))
  want = np.array([[np_w2(m0[i], a[i], m1[j], b[j]) for j in range(8)] for i in range(3)])
  np.testing.assert_allclose(cost, want, rtol=2e-3, atol=2e-3)
  paired = bures.w2_sq(*(jnp.asarray(v[:3], jnp.float32) for v in pair))
  np.testing.assert_allclose(paired, np.diag(want[:, :3]), rtol=2e-3, atol=2e-3)
  # Table 2 metric: min over the reference set, averaged.
  assert bures.mean_min_w2(np.asarray(x0), np.asarray(x1), chunk=2) == pytest.approx(
      want.min(1).mean(), rel=2e-3)
  assert bures.mean_min_w2(np.asarray(x1), np.asarray(x1)) < 1e-3
  # Its covariance part: Bures^2 = W2^2 - |m - m'|^2 at each row's nearest reference.
  j = want.argmin(1)
  bures_sq = [want[i, j[i]] - np.sum((m0[i] - m1[j[i]]) ** 2) for i in range(3)]
  assert bures.mean_min_w2_cov(np.asarray(x0), np.asarray(x1), chunk=2) == pytest.approx(
      np.mean(bures_sq), rel=5e-3, abs=5e-4)


def test_both_table2_metrics_share_one_cost_matrix(pair, monkeypatch):
  m0, a, m1, b = pair
  x0 = np.asarray(bures.pack_gaussians(jnp.asarray(m0, jnp.float32), jnp.asarray(a, jnp.float32)))
  x1 = np.asarray(bures.pack_gaussians(jnp.asarray(m1, jnp.float32), jnp.asarray(b, jnp.float32)))
  calls = []
  frechet = bures._frechet_jit
  monkeypatch.setattr(bures, "_frechet_jit", lambda f, r: calls.append(1) or frechet(f, r))
  w2 = bures.mean_min_w2(x0, x1)
  cov = bures.mean_min_w2_cov(x0, x1)
  assert len(calls) == 1  # the evaluator's second metric reuses the first's costs
  # A changed input is recomputed, not served from the remembered one.
  x0b = x0.copy()
  x0b[:, 0] += 1.0
  assert bures.mean_min_w2(x0b, x1) != pytest.approx(w2)
  assert len(calls) == 2
  assert bures.mean_min_w2_cov(x0, x1) == cov and len(calls) == 3


def test_barycenter_fixed_point():
  rng = np.random.default_rng(2)
  cov = random_spd(rng, 6, 3)
  bary = np.asarray(bures.bw_barycenter(jnp.asarray(cov, jnp.float32)), np.float64)
  # Fixed point: mean_i (S^1/2 Sigma_i S^1/2)^1/2 = S.
  sh = np.real(scipy.linalg.sqrtm(bary))
  mean = np.mean([np.real(scipy.linalg.sqrtm(sh @ c @ sh)) for c in cov], 0)
  np.testing.assert_allclose(mean, bary, rtol=5e-3, atol=5e-3)
  # Commuting (diagonal) covariances: barycentre = (mean of square roots)^2.
  diag = np.stack([np.diag(rng.uniform(0.5, 3, 3)) for _ in range(5)])
  want = np.mean(np.sqrt(diag), 0) ** 2
  np.testing.assert_allclose(bures.bw_barycenter(jnp.asarray(diag, jnp.float32)), want, rtol=1e-4)


def test_algorithm2_keeps_spd_where_euler_does_not():
  """A strongly contracting field: Euler on Sigma goes indefinite, Algorithm 2 stays SPD."""
  d = 2
  x0 = bures.pack_gaussians(jnp.zeros((8, d)), jnp.broadcast_to(jnp.eye(d), (8, d, d)))
  s = jnp.diag(jnp.array([-2.5, 0.5]))

  def tangent(t, x):
    return bures.pack_gaussians(jnp.ones((x.shape[0], d)), jnp.broadcast_to(s, (x.shape[0], d, d)))

  def euclid(t, x):  # same flow in (m, Sigma) coordinates (Eq. 9)
    cov = bures.unpack_gaussians(x)[1]
    return bures.pack_gaussians(jnp.ones((x.shape[0], d)), s @ cov + cov @ s)

  x_bw = integrate(tangent, x0, solver="euler_bw", num_steps=3)
  x_eu = integrate(euclid, x0, solver="euler", num_steps=3)
  assert np.linalg.eigvalsh(np.asarray(bures.unpack_gaussians(x_bw)[1])).min() > 0
  assert np.linalg.eigvalsh(np.asarray(bures.unpack_gaussians(x_eu)[1])).min() < 0
  np.testing.assert_allclose(bures.unpack_gaussians(x_bw)[0], 1.0, rtol=1e-6)
  # Exact flow Sigma(1) = e^S e^S; Algorithm 2 converges to it as h -> 0.
  fine = integrate(tangent, x0, solver="euler_bw", num_steps=2000)
  np.testing.assert_allclose(bures.unpack_gaussians(fine)[1][0],
                             scipy.linalg.expm(2 * np.asarray(s)), rtol=1e-2, atol=1e-3)
  assert "euler_bw" in SOLVERS


def test_project_psd():
  a = jnp.array([[[1.0, 2.0], [2.0, 1.0]]])
  p = np.asarray(bures.project_psd(a))
  assert np.linalg.eigvalsh(p).min() > 0
  np.testing.assert_allclose(p, np.swapaxes(p, 1, 2))
  spd = jnp.asarray(random_spd(np.random.default_rng(3), 2, 3), jnp.float32)
  np.testing.assert_allclose(bures.project_psd(spd), spd, rtol=1e-4, atol=1e-5)

"""BW-FM method: targets and losses per geometry, matching, Algorithm 2 generation, errors."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from flowzoo import build  # noqa: F401  (registers every component)
from flowzoo.geometry import bures
from flowzoo.methods import bwfm as bwfm_lib
from flowzoo.methods.bwfm import BWFM, featurize, to_tangent
from flowzoo.registry import BASES, COUPLINGS, METHODS, MODELS

D = 2
SHAPE = (D + 1, D)


class Zero(nn.Module):
  """A 'network' predicting the zero tangent (loss = mean norm of the target)."""

  @nn.compact
  def __call__(self, t, x, cond=None, *, mask=None, train=False):
    return 0.0 * nn.Dense(x.shape[-1])(x)


def gaussians(seed, n=8, d=D):
  rng = np.random.default_rng(seed)
  q = np.linalg.qr(rng.normal(size=(n, d, d)))[0]
  cov = np.einsum("nij,nj,nkj->nik", q, rng.uniform(0.2, 1.5, (n, d)), q)
  return bures.pack_gaussians(rng.normal(size=(n, d)), cov).astype(np.float32)


def make(geometry="bw", coupling="independent", p_uncond=0.0, model=None,
         separate_networks=False, projection="end", **ckw):
  model = model or MODELS.build("mlp", {"hidden": (16, 16), "cond_embed": 4})
  base = BASES.build("wishart", {}, wired={"event_shape": SHAPE})
  coup = COUPLINGS.build(coupling, ckw)
  return METHODS.build("bwfm", {"geometry": geometry, "p_uncond": p_uncond,
                                "separate_networks": separate_networks,
                                "projection": projection},
                       wired=dict(model=model, base=base, coupling=coup, event_shape=SHAPE))


def batch_of(x, cond_dim=2):
  n = len(x)
  return {"x1": jnp.asarray(x), "cond": jnp.ones((n, cond_dim)), "group": jnp.zeros(n, jnp.int32)}


def test_featurize_to_tangent_roundtrip():
  x = jnp.asarray(gaussians(0, 4, 3))
  f = featurize(x)
  assert f.shape == (4, 3 + 6)
  np.testing.assert_allclose(to_tangent(f, 3), x, rtol=1e-6)


@pytest.mark.parametrize("geometry", ["bw", "bw_euclidean", "frobenius"])
def test_zero_network_loss_is_target_norm(geometry):
  """Loss of the zero field = mean target norm, in the geometry's norm (Algorithm 1)."""
  with MODELS.temporary("zero_bw_test", Zero):
    method = make(geometry, model=MODELS.build("zero_bw_test", {}))
  batch = batch_of(gaussians(1))
  params = method.init(jax.random.key(0), batch)
  rng = jax.random.key(3)
  loss, _ = method.loss(params, rng, batch, 0)
  b_rng, _, t_rng, _, _ = jax.random.split(rng, 5)
  x0 = method.base.sample(params["base"], b_rng, batch)
  t = jax.random.uniform(t_rng, (8,))
  m0, c0 = bures.unpack_gaussians(x0)
  m1, c1 = bures.unpack_gaussians(batch["x1"])
  mt, ct, c = bures.mccann(m0, c0, m1, c1, t)
  dm, s = bures.riemannian_velocity(m0, m1, c, t)
  if geometry == "bw":
    want = bures.tangent_sq_norm(dm, s, ct)
  elif geometry == "bw_euclidean":
    want = bures.tangent_sq_norm(dm, s @ ct + ct @ s, ct)
  else:
    e = s @ ct + ct @ s
    want = jnp.sum(dm ** 2, -1) + jnp.sum(e ** 2, (-2, -1))
  np.testing.assert_allclose(loss, jnp.mean(want), rtol=1e-4)


def test_separate_networks_own_their_halves():
  """App. E.1: the "mean" net alone predicts a and the "cov" net alone predicts S, and
  the mean net's gradient is the same in every geometry (only the covariance target
  and norm differ between BW-FM (R), (E) and Frobenius FM)."""
  batch = batch_of(gaussians(2))
  t = jnp.linspace(0.1, 0.9, 8)
  grads = {}
  for geometry in ("bw", "bw_euclidean", "frobenius"):
    method = make(geometry, separate_networks=True)
    params = method.init(jax.random.key(0), batch)
    assert set(params["velocity"]) == {"mean", "cov"}
    grads[geometry] = jax.grad(lambda p: method.loss(p, jax.random.key(5), batch, 0)[0])(params)
  a, s = bures.unpack_gaussians(method.network(params, t, batch["x1"], batch["cond"]))
  for net, same, changed in (("mean", s, a), ("cov", a, s)):
    bumped = jax.tree.map(lambda p: p + 0.1, params["velocity"][net])
    p2 = dict(params, velocity=dict(params["velocity"], **{net: bumped}))
    a2, s2 = bures.unpack_gaussians(method.network(p2, t, batch["x1"], batch["cond"]))
    new_same, new_changed = (s2, a2) if net == "mean" else (a2, s2)
    np.testing.assert_array_equal(new_same, same)
    assert np.abs(np.asarray(new_changed - changed)).max() > 1e-3
  g_mean = [jax.tree.leaves(g["velocity"]["mean"]) for g in grads.values()]
  for other in g_mean[1:]:
    for x, y in zip(g_mean[0], other):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  g_cov = [jax.tree.leaves(g["velocity"]["cov"]) for g in grads.values()]
  assert max(np.abs(np.asarray(x - y)).max() for x, y in zip(g_cov[0], g_cov[2])) > 1e-4


def test_rounded_matching_on_frechet_cost_recovers_exact_assignment():
  x1 = gaussians(2)
  perm = np.random.default_rng(0).permutation(8)
  x0 = x1[perm] * np.float32(1.01)
  method = make(coupling="rounded_matching", epsilon=0.002, max_iterations=500)
  i, j = method.couple(jax.random.key(0), jnp.asarray(x0), batch_of(x1))
  cost = np.asarray(bures.frechet_cost(jnp.asarray(x0), jnp.asarray(x1)))
  _, col = linear_sum_assignment(cost)
  np.testing.assert_array_equal(np.asarray(j)[np.argsort(np.asarray(i))], col)
  np.testing.assert_array_equal(col, perm)


@pytest.mark.parametrize("geometry", ["bw", "frobenius"])
def test_generate_stays_spd_and_baselines_are_projected(geometry):
  chex.clear_trace_counter()
  batch = batch_of(gaussians(4))
  method = make(geometry)
  params = method.init(jax.random.key(0), batch)
  # Large outputs: scale the last layer so that Euclidean steps leave the cone.
  params["velocity"]["params"]["out"]["kernel"] *= 5.0
  gen = jax.jit(chex.assert_max_traces(n=1)(
      lambda p, r, b: method.generate(p, r, b, num_steps=3, save_at=(0.0, 1.0))))
  x, traj = gen(params, jax.random.key(1), batch)
  gen(params, jax.random.key(2), batch)  # no retrace
  assert x.shape == (8, *SHAPE) and traj.shape == (2, 8, *SHAPE)
  cov = np.asarray(bures.unpack_gaussians(x)[1], np.float64)
  np.testing.assert_allclose(cov, np.swapaxes(cov, 1, 2), rtol=1e-5, atol=1e-5)
  assert np.linalg.eigvalsh(cov).min() > 0


def min_eig(x):
  """Smallest covariance eigenvalue of packed Gaussians `[..., D + 1, D]`."""
  cov = np.asarray(bures.unpack_gaussians(np.asarray(x, np.float64))[1])
  return np.linalg.eigvalsh(0.5 * (cov + np.swapaxes(cov, -1, -2))).min()


@pytest.mark.parametrize("geometry", ["bw_euclidean", "frobenius"])
def test_projection_every_step_keeps_every_iterate_spd(geometry):
  """projection="every_step" (the reference code's baselines): Euler, then SPD, at every step."""
  batch = batch_of(gaussians(4))
  steps, rng = 4, jax.random.key(1)
  every, end = make(geometry, projection="every_step"), make(geometry)
  params = every.init(jax.random.key(0), batch)
  params["velocity"]["params"]["out"]["kernel"] *= 20.0  # Euclidean steps leave the cone
  # Every grid time saved: the trajectory holds every iterate.
  ts = tuple(np.linspace(0.0, 1.0, steps + 1))
  x, traj = every.generate(params, rng, batch, num_steps=steps, save_at=ts)
  assert min_eig(traj) > 0 and min_eig(x) > 0
  # Exactly the hand-written loop x <- project(x + h v(t, x)).
  field = every.velocity_fn(params, batch)
  y = every.base.sample(params["base"], rng, batch, train=False)
  unprojected = []
  for i in range(steps):
    y = y + (1.0 / steps) * field(jnp.full((8,), i / steps), y)
    unprojected.append(min_eig(y))
    y = bwfm_lib.project(y)
  np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
  assert min(unprojected[:-1]) < 0  # an inner step leaves the cone
  # Projecting once at the end is a different flow (the network saw non-SPD states).
  assert not np.allclose(end.generate(params, rng, batch, num_steps=steps), x, atol=1e-4)
  with pytest.raises(ValueError, match="fixed-step solver"):
    every.generate(params, rng, batch, solver="dopri5")
  with pytest.raises(ValueError, match="projection must be one of"):
    make(geometry, projection="sometimes")


def test_bw_other_solvers_integrate_the_same_flow():
  """rk4 on the Euclidean form (Eq. 9) and Algorithm 2 with small h agree."""
  batch = batch_of(gaussians(5))
  method = make("bw")
  params = method.init(jax.random.key(0), batch)
  a = method.generate(params, jax.random.key(1), batch, solver="euler_bw", num_steps=400)
  b = method.generate(params, jax.random.key(1), batch, solver="rk4", num_steps=20)
  np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)
  with pytest.raises(ValueError, match="needs geometry 'bw'"):
    make("frobenius").generate(params, jax.random.key(1), batch, solver="euler_bw")


def test_guidance():
  batch = batch_of(gaussians(6))
  method = make("bw", p_uncond=0.2)
  params = method.init(jax.random.key(0), batch)
  g1 = method.generate(params, jax.random.key(1), batch, num_steps=4)
  g2 = method.generate(params, jax.random.key(1), batch, num_steps=4, guidance=3.0)
  assert not np.allclose(g1, g2)
  no_cfg = make("bw")
  with pytest.raises(ValueError, match="p_uncond"):
    no_cfg.generate(no_cfg.init(jax.random.key(0), batch), jax.random.key(1), batch, guidance=2.0)


def test_init_from_data_fits_base():
  x = gaussians(7, 32)
  method = make()
  params = method.init(jax.random.key(0), batch_of(x[:4]))
  params = method.init_from_data(params, x)
  m = bures.unpack_gaussians(x)[0]
  np.testing.assert_allclose(params["base"]["mean_loc"], m.mean(0), rtol=1e-5, atol=1e-6)
  bary = params["base"]["chol"] @ params["base"]["chol"].T
  np.testing.assert_allclose(bary, bures.bw_barycenter(jnp.asarray(bures.unpack_gaussians(x)[1])),
                             rtol=1e-4, atol=1e-5)
  # Source covariances average to the barycentre (Wishart mean, App. D).
  src = method.base.sample(params["base"], jax.random.key(1), {"cond": jnp.zeros((4000, 1))})
  np.testing.assert_allclose(jnp.mean(bures.unpack_gaussians(src)[1], 0), bary, atol=0.03)


def test_bad_input_errors():
  method = make()
  with pytest.raises(ValueError, match="D \\+ 1, D"):
    method.check_data((3, 3), 2)
  with pytest.raises(ValueError, match="built for dimension 2"):
    method.check_data((4, 3), 2)
  with pytest.raises(ValueError, match="geometry must be one of"):
    make("euclid")
  with pytest.raises(ValueError, match="D \\+ 1, D"):
    BASES.build("wishart", {}, wired={"event_shape": (2, 2)})
  bad = gaussians(0)
  bad[3, 1:] = [[1.0, 2.0], [2.0, 1.0]]
  with pytest.raises(ValueError, match="sample 3 is not positive definite"):
    method.init_from_data({}, bad)
  method.check_data(SHAPE, 2)
  assert set(method.metrics()) == {"bw_min_w2", "bw_min_w2_cov"}

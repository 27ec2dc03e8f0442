"""Tests of the descriptor-conditioned Gaussian mixture base ("gmm")."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowzoo import bases  # noqa: F401  (registers)
from flowzoo.bases.mixture import GMM
from flowzoo.registry import BASES

D, C = 2, 3


def _batch(n, seed=0):
  cond = jax.random.normal(jax.random.key(seed), (n, C))
  return {"cond": cond, "x1": jnp.zeros((n, D)), "group": jnp.zeros((n,), jnp.int32)}


def _set_mixture(gmm, params, centres, weights):
  """Makes every descriptor map to the mixture (centres, weights)."""
  p = jax.tree.map(lambda a: a, params)
  p["params"]["centres"] = jnp.asarray(centres, jnp.float32)
  out = p["params"]["h_p"]["out"]
  p["params"]["h_p"]["out"] = {"kernel": jnp.zeros_like(out["kernel"]),
                               "bias": jnp.log(jnp.asarray(weights, jnp.float32))}
  if gmm.means == "mlp":
    p["params"]["h_theta"]["out"] = jax.tree.map(jnp.zeros_like, p["params"]["h_theta"]["out"])
  return p


@pytest.mark.parametrize("means", ["mlp", "free"])
def test_hard_samples_match_mixture_moments(rng, means):
  gmm = GMM(event_shape=(D,), num_modes=3, variance=0.04, means=means, hidden=(8,), dropout=0.3)
  n = 20_000
  batch = {"cond": jnp.tile(_batch(1)["cond"], (n, 1))}
  params = gmm.init(rng, batch)
  if means == "mlp":  # random MLP modes: spread them so the moments are informative.
    params["params"]["centres"] = jnp.array([[0.0, 0.0], [3.0, 0.0], [0.0, -2.0]])
  locs, log_p = gmm.mixture(params, batch)
  mu, p = np.asarray(locs[0], np.float64), np.exp(np.asarray(log_p[0], np.float64))
  mean = p @ mu
  cov = 0.04 * np.eye(D) + (mu * p[:, None]).T @ mu - np.outer(mean, mean)
  x = np.asarray(jax.jit(lambda k: gmm.sample(params, k, batch))(jax.random.key(1)), np.float64)
  assert x.shape == (n, D)
  np.testing.assert_allclose(x.mean(0), mean, atol=0.06)
  np.testing.assert_allclose(np.cov(x.T), cov, atol=0.12)


def test_hard_samples_pick_modes_with_mixture_weights(rng):
  gmm = GMM(event_shape=(D,), num_modes=3, variance=0.01, means="free", hidden=(8,))
  n = 20_000
  batch = _batch(n)  # different descriptors, same mixture after _set_mixture
  centres, weights = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), np.array([0.6, 0.3, 0.1])
  params = _set_mixture(gmm, gmm.init(rng, batch), centres, weights)
  x = np.asarray(gmm.sample(params, jax.random.key(3), batch))
  nearest = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(np.bincount(nearest, minlength=3) / n, weights, atol=0.015)
  # Within a component the spread is sigma^2 = 0.01 per axis.
  np.testing.assert_allclose((x - centres[nearest]).var(0), [0.01, 0.01], rtol=0.1)
  # Soft (training) samples are blends of modes: they are not all near a mode.
  soft = np.asarray(gmm.sample(params, jax.random.key(3), batch, train=True))
  assert np.mean(((soft[:, None] - centres[None]) ** 2).sum(-1).min(1) > 0.25) > 0.05


def _geo(gmm, params, key, batch, train=True, dropout=None):
  x0 = gmm.sample(params, key, batch, train=train, dropout=dropout)
  return jnp.mean(jnp.sum((batch["x1"] - x0) ** 2, -1))


def test_gumbel_gradients_reach_h_theta_and_h_p(rng):
  gmm = GMM(event_shape=(D,), num_modes=4, hidden=(8,), dropout=0.2)
  batch = dict(_batch(8), x1=jax.random.normal(jax.random.key(7), (8, D)))
  params = gmm.init(rng, batch)
  g = jax.grad(_geo, argnums=1)(gmm, params, jax.random.key(1), batch)["params"]
  for name in ("h_theta", "h_p", "centres"):
    norm = sum(float(jnp.sum(jnp.abs(a))) for a in jax.tree.leaves(g[name]))
    assert norm > 1e-6, f"no gradient reaches {name}"
  # Hard (sampling-time) draws carry no gradient to the weights: the
  # relaxation is what makes h_p trainable.
  g_hard = jax.grad(_geo, argnums=1)(gmm, params, jax.random.key(1), batch, train=False)
  assert all(float(jnp.abs(a).max()) == 0.0 for a in jax.tree.leaves(g_hard["params"]["h_p"]))


def test_straight_through_is_hard_forward_soft_backward(rng):
  gmm = GMM(event_shape=(D,), num_modes=4, hidden=(8,), straight_through=True)
  batch = dict(_batch(8), x1=jax.random.normal(jax.random.key(7), (8, D)))
  params = gmm.init(rng, batch)
  key = jax.random.key(4)
  np.testing.assert_allclose(gmm.sample(params, key, batch, train=True, dropout=False),
                             gmm.sample(params, key, batch, train=False), atol=1e-6)
  g = jax.grad(_geo, argnums=1)(gmm, params, key, batch, True, False)["params"]["h_p"]
  assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g)) > 0


def test_dropout_switch_traced_without_retracing(rng):
  gmm = GMM(event_shape=(D,), num_modes=3, hidden=(16,), dropout=0.5)
  batch = _batch(8)
  params = gmm.init(rng, batch)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def mix(on, key):
    return gmm.mixture(params, batch, dropout=on, rng=key)

  k1, k2 = jax.random.key(1), jax.random.key(2)
  on1, on2 = mix(jnp.array(True), k1), mix(jnp.array(True), k2)
  off1, off2 = mix(jnp.array(False), k1), mix(jnp.array(False), k2)
  assert not np.allclose(on1[0], on2[0]) and not np.allclose(on1[1], on2[1])
  for a, b in zip(off1 + off2, gmm.mixture(params, batch) * 2):
    np.testing.assert_allclose(a, b, atol=1e-6)
  with pytest.raises(ValueError, match="dropout needs an rng"):
    gmm.mixture(params, batch, dropout=True)


def test_init_from_data(rng, caplog):
  rs = np.random.default_rng(0)
  truth = np.array([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
  groups = np.repeat(np.arange(3), 200)
  x = truth[groups] + 0.1 * rs.normal(size=(600, D))
  batch = _batch(8)
  gmm = GMM(event_shape=(D,), num_modes=3, hidden=(8,), data_init="kmeans")
  params = gmm.init_from_data(gmm.init(rng, batch), x, groups)
  locs, _ = gmm.mixture(params, batch)
  for b in range(8):  # h_Theta(y) = K-means centres for every descriptor
    dist = np.linalg.norm(np.asarray(locs[b])[:, None] - truth[None], axis=-1)
    assert dist.min(0).max() < 0.05 and dist.min(1).max() < 0.05

  free = GMM(event_shape=(D,), num_modes=3, means="free", data_init="per_condition")
  p0 = free.init(rng, batch)
  p = free.init_from_data(p0, x, groups, seed=1)
  centres = np.asarray(p["params"]["centres"])
  assert np.all(np.linalg.norm(centres - truth, axis=1) < 0.5)  # mode i from condition i
  assert np.any(np.all(np.abs(x[groups == 0] - centres[0]) < 1e-5, axis=1))  # a real sample
  np.testing.assert_array_equal(p0["params"]["centres"], free.init(rng, batch)["params"]["centres"])
  six = GMM(event_shape=(D,), num_modes=6, means="free", data_init="per_condition")
  with caplog.at_level("WARNING"):  # e.g. `letters` changed but not num_modes
    six.init_from_data(six.init(rng, batch), x, groups)
  assert "num_modes=6 for 3 training conditions" in caplog.text
  with pytest.raises(ValueError, match="needs `groups`"):
    free.init_from_data(p0, x)
  with pytest.raises(ValueError, match="features"):
    gmm.init_from_data(p0, np.zeros((10, 5)))
  none = GMM(event_shape=(D,), data_init="none")
  assert none.init_from_data(p0, x) is p0


def test_image_event_shape(rng):
  gmm = GMM(event_shape=(4, 4, 1), num_modes=2, hidden=(8,))
  batch = _batch(5)
  params = gmm.init(rng, batch)
  assert gmm.sample(params, rng, batch).shape == (5, 4, 4, 1)
  assert gmm.sample(params, rng, batch, train=True).shape == (5, 4, 4, 1)


def test_registry_build_and_wiring():
  gmm = BASES.build("gmm", {"num_modes": 2}, wired={"event_shape": (D,), "cond_dim": C,
                                                    "num_conditions": 7})
  assert isinstance(gmm, GMM) and gmm.trainable and gmm.dim == D


@pytest.mark.parametrize("kwargs, match", [
    ({"num_modes": 0}, "num_modes"),
    ({"num_modes": 1.5}, "num_modes"),
    ({"variance": 0.0}, "variance"),
    ({"variance": -0.01}, "variance"),
    ({"temperature": 0.0}, "temperature"),
    ({"means": "conv"}, "means"),
    ({"dropout": 1.0}, "dropout"),
    ({"hidden": (8, 0)}, "hidden"),
    ({"data_init": "random"}, "data_init"),
])
def test_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    BASES.build("gmm", kwargs, wired={"event_shape": (D,)})

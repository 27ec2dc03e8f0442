"""WFM on point clouds: inner maps per pair, outer Fréchet matching, loss, generation, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from flowzoo import build as build_lib
from flowzoo.bases.pointclouds import GaussianClouds, cloud_moments
from flowzoo.couplings.entropic_map import EntropicMap
from flowzoo.couplings.exact import Exact
from flowzoo.couplings.independent import Independent
from flowzoo.data.populations import Populations, pack
from flowzoo.geometry.bures import frechet_cost_moments as frechet_cost
from flowzoo.methods.wfm import WFM
from flowzoo.models.transformer import Transformer

N, D = 8, 2


def method(coupling=None, **kw):
  model = Transformer(width=16, num_blocks=1, num_heads=2, mlp_dim=16, time_frequencies=4,
                      event_shape=(N, D))
  return WFM(model=model, base=GaussianClouds(event_shape=(N, D)),
             coupling=coupling or Independent(), **kw)


def clouds(rng, sizes, shift=0.0):
  """Padded clouds `[len(sizes), N, D]` (real points first) and masks."""
  x = np.zeros((len(sizes), N, D), np.float32)
  mask = np.arange(N)[None, :] < np.asarray(sizes)[:, None]
  for b, s in enumerate(sizes):
    x[b, :s] = rng.normal(size=(s, D)) + shift
  return jnp.asarray(x), jnp.asarray(mask)


def make_batch(sizes, seed=0):
  x1, mask1 = clouds(np.random.default_rng(seed), sizes, shift=0.3)
  b = len(sizes)
  cond = jnp.asarray(np.eye(2, dtype=np.float32)[np.arange(b) % 2])
  return {"x1": x1, "mask1": mask1, "cond": cond,
          "group": jnp.zeros((b,), jnp.int32)}


def test_auto_inner_map_per_pair_rounded_or_entropic():
  """Equal sizes -> exact-OT permutation; unequal sizes -> the entropic map of the real points."""
  rng = np.random.default_rng(1)
  x0, mask0 = clouds(rng, [6, 6])
  x1, mask1 = clouds(rng, [6, 4])
  m = method(coupling=Exact(), inner="auto", epsilon=0.01, max_iterations=2000)
  y, _ = jax.jit(m.transport)(x0, x1, mask0, mask1)
  # Pair 0 (6 vs 6): rounded matching = the exact assignment on this tiny problem.
  a, b = np.asarray(x0[0, :6]), np.asarray(x1[0, :6])
  r, c = linear_sum_assignment(cdist(a, b, "sqeuclidean"))
  np.testing.assert_allclose(y[0, :6], b[c[np.argsort(r)]], atol=1e-6)
  # Pair 1 (6 vs 4): entropic map fitted on the unpadded clouds (padding ignored).
  ref = EntropicMap(epsilon=0.01, max_iterations=2000).transport(x0[1, :6], x1[1, :4])
  np.testing.assert_allclose(y[1, :6], ref, atol=1e-4)
  # Not a matching: with 6 sources on 4 targets some sources are split between targets.
  assert np.max(np.min(cdist(np.asarray(y[1, :6]), np.asarray(x1[1, :4])), 1)) > 1e-2
  np.testing.assert_array_equal(y[:, 6:], 0.0)


def test_inner_ot_in_chunks_equals_all_pairs_at_once():
  """`inner_chunk` changes the order of work, not the maps (5 pairs in chunks of 2: a remainder)."""
  rng = np.random.default_rng(2)
  x0, mask0 = clouds(rng, [6, 6, 8, 5, 7])
  x1, mask1 = clouds(rng, [6, 4, 8, 5, 3])
  whole = jax.jit(method(coupling=Exact(), inner_chunk=5).transport)(x0, x1, mask0, mask1)
  chunked = jax.jit(method(coupling=Exact(), inner_chunk=2).transport)(x0, x1, mask0, mask1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), chunked, whole)
  with pytest.raises(ValueError, match="inner_chunk must be a positive integer"):
    method(inner_chunk=0)


def test_entropic_inner_used_for_unequal_sizes_inside_the_method():
  """Outer OT pairs clouds of different sizes; those pairs get the entropic map."""
  m = method(coupling=Exact(), inner="auto", epsilon=0.05, max_iterations=100)
  batch = make_batch([3, 8, 5, 6])
  params = jax.jit(m.init)(jax.random.key(0), batch)
  keys = m.split_keys(jax.random.key(1))
  x0, x1_hat, _, mask0, _ = jax.jit(lambda p: m.pair(p, keys, batch, 0))(params)
  # The targets the outer coupling chose (the exact coupling ignores its key).
  _, j = m.couple(keys.couple, m.draw_sources(params, keys.base, batch, 0), batch)
  x1, mask1 = batch["x1"][j], batch["mask1"][j]
  sizes0, sizes1 = np.asarray(mask0).sum(1), np.asarray(mask1).sum(1)
  assert (sizes0 != sizes1).any()  # the Fréchet matching mixed sizes
  emap = EntropicMap(epsilon=0.05, max_iterations=100)
  for b in np.flatnonzero(sizes0 != sizes1):
    ref = emap.transport(x0[b], x1[b], mask0=mask0[b], mask1=mask1[b])
    np.testing.assert_allclose(x1_hat[b, :sizes0[b]], ref[:sizes0[b]], atol=1e-4)


def test_loss_at_zero_init_is_mean_squared_displacement():
  """Zero-initialised network: loss = mean over clouds of mean over real points |T(x) - x|^2."""
  m = method(inner="rounded", epsilon=0.05)
  batch = make_batch([3, 8, 5, 6])
  params = jax.jit(m.init)(jax.random.key(0), batch)
  rng = jax.random.key(3)

  @jax.jit
  def loss_and_pair(params, rng, batch):
    return m.loss(params, rng, batch, 0)[0], m.pair(params, m.split_keys(rng), batch, 0)

  loss, (x0, x1_hat, _, mask0, _) = loss_and_pair(params, rng, batch)
  sq = np.sum((np.asarray(x1_hat) - np.asarray(x0)) ** 2, -1)
  expected = np.mean([sq[b][np.asarray(mask0[b])].mean() for b in range(4)])
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  # Rounded pairs are permutations of the targets' real points.
  for b in range(4):
    got = np.sort(np.asarray(x1_hat[b])[np.asarray(mask0[b])], axis=0)
    want = np.sort(np.asarray(batch["x1"][b])[np.asarray(batch["mask1"][b])], axis=0)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_frechet_cost_matches_closed_form():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(3, 5, D))
  b = rng.normal(size=(4, 6, D)) * 2 + 1
  m0, c0 = cloud_moments(jnp.asarray(a))
  m1, c1 = cloud_moments(jnp.asarray(b))
  got = np.asarray(frechet_cost(m0, c0, m1, c1))
  for i in range(3):
    for j in range(4):
      ca, cb = np.cov(a[i].T, bias=True), np.cov(b[j].T, bias=True)
      sa = scipy.linalg.sqrtm(ca).real
      want = (np.sum((a[i].mean(0) - b[j].mean(0)) ** 2)
              + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(sa @ cb @ sa).real))
      assert got[i, j] == pytest.approx(want, rel=1e-3, abs=1e-4)


def test_outer_coupling_minimises_frechet_cost():
  m = method(coupling=Exact(), epsilon=0.05)
  batch = make_batch([4, 8, 5, 6])
  x0, _ = clouds(np.random.default_rng(5), [4, 8, 5, 6])
  i, j = m.couple(jax.random.key(0), x0, batch)
  c = np.asarray(frechet_cost(*cloud_moments(x0, batch["mask1"]),
                              *cloud_moments(batch["x1"], batch["mask1"])))
  r, col = linear_sum_assignment(c)
  assert c[np.asarray(i), np.asarray(j)].sum() == pytest.approx(c[r, col].sum(), rel=1e-5)


def test_generate_sizes_like_mask_and_zero_padding():
  m = method(p_uncond=0.2)
  batch = make_batch([3, 8, 5])
  params = jax.jit(m.init)(jax.random.key(0), batch)
  params["velocity"] = jax.tree.map(lambda p: p + 0.1, params["velocity"])  # non-zero field
  gen = jax.jit(lambda p, r, b: m.generate(p, r, b, num_steps=4, guidance=2.0,
                                           save_at=(0.0, 1.0)))
  x, traj = gen(params, jax.random.key(1), batch)
  assert x.shape == (3, N, D) and traj.shape == (2, 3, N, D)
  mask = np.asarray(batch["mask1"])
  np.testing.assert_array_equal(np.asarray(x)[~mask], 0.0)
  assert np.all(np.abs(np.asarray(x)[mask]) > 0)
  np.testing.assert_allclose(traj[1], x, atol=1e-6)


def test_bad_input_raises_before_compilation():
  m = method()
  with pytest.raises(ValueError, match="event shape \\(N, D\\)"):
    m.check_data((D,), 2)
  with pytest.raises(KeyError, match="mask1"):
    m.generate({}, jax.random.key(0), {"cond": jnp.zeros((2, 2))})
  with pytest.raises(ValueError, match="p_uncond"):
    method(p_uncond=0.0).velocity_fn({}, {"cond": jnp.zeros((2, 2)),
                                          "mask1": jnp.ones((2, N), bool)}, guidance=2.0)
  with pytest.raises(ValueError, match="inner"):
    method(inner="sinkhorn")
  with pytest.raises(ValueError, match="equal-size"):
    method(coupling=Exact(), inner="rounded")
  with pytest.raises(ValueError, match="is a transport map"):
    method(coupling=EntropicMap())
  # Clouds of dimension 3 for a model built for dimension 2.
  batch = make_batch([3, 4])
  params = jax.jit(m.init)(jax.random.key(0), batch)
  bad = dict(batch, x1=jnp.zeros((2, N, 3)))
  with pytest.raises(ValueError, match="dimension"):
    m.loss(params, jax.random.key(0), bad, 0)


def test_build_rejects_wrong_point_dimension_between_model_and_data():
  import ml_collections
  cfg = ml_collections.ConfigDict(dict(
      method=dict(name="wfm", epsilon=0.05), model=dict(name="transformer", width=8, num_blocks=1,
                                                         num_heads=2, event_shape=(N, 3)),
      base=dict(name="gaussian_clouds"), coupling=dict(name="independent")))
  with pytest.raises(ValueError, match="dimension"):
    build_lib.build_method(cfg, event_shape=(N, D), cond_dim=2)


def test_train_steps_reduce_loss_and_populations_reject_empty_cloud():
  from flowzoo.train import Trainer, make_optimizer
  rng = np.random.default_rng(0)
  x, mask = clouds(rng, [4, 6, 8, 5] * 4, shift=2.0)
  x, mask = np.asarray(x), np.array(mask)
  pops = Populations(names=["a"], samples=[x], descriptors=np.ones((1, 1)),
                     splits=["train"], masks=[mask])
  m = method(epsilon=0.05, max_iterations=30)
  trainer = Trainer(m, {"velocity": make_optimizer(lr=3e-3)}, batch_size=8,
                    populations_per_batch=1, ema_decay=0.0)
  data, ids = pack(pops), jnp.arange(1)
  state = trainer.init(jax.random.key(0), data, ids)
  losses = []
  for _ in range(2):
    state, metrics = trainer.run(state, data, ids, jax.random.key(1), 30)
    losses.append(metrics["loss"])
  assert losses[1][-10:].mean() < 0.7 * losses[0][:5].mean()
  mask[1, :] = False
  with pytest.raises(ValueError, match="empty point"):
    Populations(names=["a"], samples=[x], descriptors=np.ones((1, 1)),
                splits=["train"], masks=[mask])


def test_gaussian_clouds_base_statistics_and_padding():
  """App. D: L ~ N(mu_L, sigma_L) from the targets' Cholesky factors; sized by mask1."""
  rng = np.random.default_rng(0)
  L = np.array([[1.5, 0.0], [0.8, 0.4]])
  n = 4000
  x1 = rng.normal(size=(6, n, D)) @ L.T
  batch = {"x1": jnp.asarray(x1, jnp.float32), "mask1": jnp.ones((6, n), bool),
           "cond": jnp.zeros((6, 1))}
  base = GaussianClouds(event_shape=(n, D))
  params = base.init(jax.random.key(0), batch)
  np.testing.assert_allclose(params["chol_mean"], L, atol=0.05)
  assert float(params["chol_std"].max()) < 0.05
  sizes = np.array([n, 10, 3000])
  mask = jnp.asarray(np.arange(n)[None] < sizes[:, None])
  x0 = np.asarray(base.sample(params, jax.random.key(1),
                              {"mask1": mask, "cond": jnp.zeros((3, 1))}))
  np.testing.assert_array_equal(x0[~np.asarray(mask)], 0.0)
  np.testing.assert_allclose(np.cov(x0[0].T), L @ L.T, atol=0.15)
  # With spread in the factors, covariances differ from cloud to cloud.
  wide = {"chol_mean": params["chol_mean"], "chol_std": jnp.full((D, D), 0.5)}
  x0 = np.asarray(base.sample(wide, jax.random.key(2), {"mask1": jnp.ones((2, n), bool),
                                                         "cond": jnp.zeros((2, 1))}))
  assert np.abs(np.cov(x0[0].T) - np.cov(x0[1].T)).max() > 0.2
  with pytest.raises(ValueError, match="event shape"):
    GaussianClouds(event_shape=(D,))

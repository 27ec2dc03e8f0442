"""Tests of the MixFlow method and its training planner."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flowzoo import build as build_lib
from flowzoo.bases.gaussian import Gaussian
from flowzoo.bases.mixture import GMM
from flowzoo.data.populations import Populations, pack
from flowzoo.couplings.coupling import Coupling
from flowzoo.methods.cfm import CFM
from flowzoo.methods.method import Pairs, paired_targets
from flowzoo.methods.mixflow import MixFlow
from flowzoo.methods.planner import Planner
from flowzoo.models.mlp import MLP
from flowzoo.registry import COUPLINGS, METHODS
from flowzoo.train import Trainer

D, C, B = 2, 3, 8


def _batch(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  group = jnp.repeat(jnp.arange(2), B // 2)
  cond = jax.random.normal(k2, (2, C))[group]
  return {"x1": jax.random.normal(k1, (B, D)) + 2.0, "cond": cond, "group": group}


def _method(total_steps=40, base=None, coupling="exact", **kw):
  base = base or GMM(event_shape=(D,), num_modes=3, hidden=(8,), dropout=0.3)
  kw = dict(dict(warmup=0.1, alternating=0.8, cooldown=0.1, base_every=3), **kw)
  return MixFlow(model=MLP(hidden=(16, 16), cond_embed=8), base=base,
                 coupling=COUPLINGS.build(coupling), total_steps=total_steps, **kw)


# -- planner -------------------------------------------------------------------
def test_planner_schedule_exact_steps():
  p = Planner(total_steps=50, warmup=0.1, alternating=0.8, cooldown=0.1, every=3)
  steps = np.arange(60)
  phase = np.asarray(p.phase(steps))
  np.testing.assert_array_equal(phase, [0] * 5 + [1] * 40 + [2] * 15)
  base = np.flatnonzero(np.asarray(p.is_base_step(steps)))
  np.testing.assert_array_equal(base, np.arange(8, 45, 4))  # 3 velocity steps, then 1 base
  assert p.num_base_steps == len(base) == 10
  np.testing.assert_array_equal(np.asarray(p.dropout(steps)), phase < 2)
  # The reference defaults: 0.1 / 0.8 / 0.1 and k = 10.
  ref = Planner(total_steps=1000)
  base = np.flatnonzero(np.asarray(ref.is_base_step(np.arange(1000))))
  assert (ref.warmup_end, ref.alternating_end) == (100, 900)
  np.testing.assert_array_equal(base, np.arange(110, 900, 11))
  # floor(0.3 * 10) must be 3 despite 0.3 * 10 = 2.9999999999999996.
  assert Planner(total_steps=10, warmup=0.3, alternating=0.4, cooldown=0.3).warmup_end == 3
  assert bool(Planner(total_steps=10, cooldown_dropout=True).dropout(jnp.array(9)))


def test_planner_reference_rule_is_a_base_step_at_every_multiple_of_k():
  """rule="step_mod_k": Lotfollahi-lab/MixFlow's `idx_iter % 10 == 0` (9 velocity steps per base)."""
  ref = Planner(total_steps=1000, every=10, rule="step_mod_k")
  steps = np.arange(1000)
  base = np.flatnonzero(np.asarray(ref.is_base_step(steps)))
  np.testing.assert_array_equal(base, np.arange(100, 900, 10))
  assert ref.num_base_steps == len(base) == 80
  assert set(np.diff(base) - 1) == {9}  # 9 velocity steps between base steps
  # Phases and dropout are the same as under flowzoo's rule; only the base steps move.
  ours = Planner(total_steps=1000, every=10)
  np.testing.assert_array_equal(ref.phase(steps), ours.phase(steps))
  np.testing.assert_array_equal(ref.dropout(steps), ours.dropout(steps))
  assert ours.num_base_steps == 72  # cycles of 11: 10 velocity steps per base step
  # The global step counts, not the phase's own: alternating [5, 45), k = 3.
  p = Planner(total_steps=50, every=3, rule="step_mod_k")
  base = np.flatnonzero(np.asarray(p.is_base_step(np.arange(60))))
  np.testing.assert_array_equal(base, np.arange(6, 45, 3))
  assert p.num_base_steps == len(base) == 13
  assert "multiple of 3" in repr(p)
  method = _method(total_steps=50, base_step_rule="step_mod_k")
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(method.is_base_step(np.arange(60)))),
                                base)
  with pytest.raises(ValueError, match="rule must be one of"):
    _method(base_step_rule="every_k")


@pytest.mark.parametrize("kwargs, match", [
    (dict(warmup=0.2, alternating=0.8, cooldown=0.1), "sum to 1"),
    (dict(warmup=-0.1, alternating=1.0, cooldown=0.1), "warmup fraction"),
    (dict(every=0), "every"),
    (dict(every=2.5), "every"),
    (dict(total_steps=0), "total_steps"),
])
def test_planner_bad_input(kwargs, match):
  kwargs = dict(dict(total_steps=100), **kwargs)
  with pytest.raises(ValueError, match=match):
    Planner(**kwargs)
  # The method raises the same errors when built from a config section.
  kwargs["base_every"] = kwargs.pop("every", 10)
  with pytest.raises(ValueError, match=match):
    METHODS.build("mixflow", kwargs, wired=dict(
        model=MLP(hidden=(8,)), base=GMM(event_shape=(D,)), coupling=COUPLINGS.build("exact")))


def test_needs_total_steps():
  with pytest.raises(TypeError, match="total_steps"):
    MixFlow(model=MLP(), base=GMM(event_shape=(D,)), coupling=COUPLINGS.build("exact"))


# -- losses ----------------------------------------------------------------------
class _Reverse(Coupling):
  """tau(s) = B - 1 - s: makes a wrong gather visible."""

  accepts_cost = False

  def __call__(self, rng, x0, x1, *, groups=None, mask0=None, mask1=None):
    n = x0.shape[0]
    return jnp.arange(n), jnp.arange(n)[::-1]


def _reverse_coupling():
  return _Reverse()


@pytest.mark.parametrize("step, base_step", [(5, False), (6, False), (7, True), (39, False)])
def test_loss_is_eq6_or_eq7_with_the_pairing(rng, step, base_step):
  with COUPLINGS.temporary("test_reverse", _reverse_coupling):
    method = _method(coupling="test_reverse")
  batch = _batch()
  params = method.init(rng, batch)
  key = jax.random.key(3)
  loss, m = jax.jit(method.loss)(params, key, batch, jnp.array(step))
  assert bool(method.is_base_step(step)) == base_step
  # Re-derive with the documented key layout (the same as CFM.loss).
  keys = jax.random.split(key, 5)
  b_rng, _ = jax.random.split(keys[0])
  x0 = method.base.sample(params["base"], b_rng, batch, train=True,
                          dropout=method.base_dropout(step))
  tgt = paired_targets(batch, jnp.arange(B)[::-1])
  geo = jnp.mean(jnp.sum((tgt["x1"] - x0) ** 2, -1))
  ot, _ = method.fm_loss(params, method.split_keys(key), Pairs(x0, tgt["x1"], tgt["cond"]))
  np.testing.assert_allclose(m["loss_geo"], geo, rtol=1e-5)
  np.testing.assert_allclose(m["loss_ot"], ot, rtol=1e-5)
  np.testing.assert_allclose(loss, geo if base_step else ot, rtol=1e-5)
  assert float(m["phase"]) == (0 if step < 4 else 1 if step < 36 else 2)
  assert float(m["base_step"]) == float(base_step)


def _grad_norms(tree):
  return {k: sum(float(jnp.sum(jnp.abs(a))) for a in jax.tree.leaves(v)) for k, v in tree.items()}


def test_gradients_go_only_to_the_active_group(rng):
  method = _method()
  batch = _batch()
  params = method.init(rng, batch)
  grad = jax.jit(jax.grad(lambda p, s: method.loss(p, jax.random.key(1), batch, s)[0]))
  g_vel = grad(params, jnp.array(5))   # alternating, velocity step
  g_base = grad(params, jnp.array(7))  # alternating, base step (4 + 3)
  assert _grad_norms(g_vel)["velocity"] > 0 and _grad_norms(g_vel)["base"] == 0.0
  assert _grad_norms(g_base)["velocity"] == 0.0
  inner = _grad_norms(g_base["base"]["params"])
  assert inner["h_theta"] > 0 and inner["h_p"] > 0 and inner["centres"] > 0
  assert method.active(5) == {"velocity": True, "base": False}
  assert method.active(7) == {"velocity": False, "base": True}


def test_no_retracing_across_phases(rng):
  method = _method()
  batch = _batch()
  params = method.init(rng, batch)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def loss(p, s):
    return method.loss(p, jax.random.key(0), batch, s)

  for s in (0, 5, 7, 38, 100):
    loss(params, jnp.array(s, jnp.int32))


def test_base_dropout_on_in_warmup_off_in_cooldown(rng):
  method = _method()
  batch = _batch()
  params = method.init(rng, batch)
  mix = jax.jit(lambda s, k: method.base.mixture(
      params["base"], batch, dropout=method.planner.dropout(s), rng=k))
  k1, k2 = jax.random.key(1), jax.random.key(2)
  for s in (0, 20):  # warm-up, alternating: two dropout masks, two outputs
    a, b = mix(jnp.array(s), k1), mix(jnp.array(s), k2)
    assert not np.allclose(a[0], b[0]) and not np.allclose(a[1], b[1])
  a, b = mix(jnp.array(39), k1), mix(jnp.array(39), k2)  # cool-down: deterministic
  for x, y, z in zip(a, b, method.base.mixture(params["base"], batch)):
    np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(x, z, atol=1e-6)


def test_velocity_step_dropout_off_keeps_dropout_to_base_steps(rng):
  batch = _batch()
  algo1, own = _method(), _method(velocity_step_dropout=False)
  params = algo1.init(rng, batch)
  key = jax.random.key(3)
  loss = jax.jit(lambda m, s: m.loss(params, key, batch, jnp.array(s))[1]["loss_geo"],
                 static_argnums=0)
  # Same draw when dropout is off for both: cool-down.
  assert float(loss(algo1, 39)) == float(loss(own, 39))
  # Alternating velocity step (5): Algorithm 1 draws with dropout, `own` without;
  # base step (7): both with the same mask.
  assert float(loss(algo1, 5)) != float(loss(own, 5))
  assert float(loss(algo1, 7)) == float(loss(own, 7))
  np.testing.assert_array_equal(np.asarray(own.base_dropout(jnp.arange(40))),
                                np.asarray(own.is_base_step(jnp.arange(40))))


def test_fixed_base_is_vanilla_cfm(rng):
  kw = dict(model=MLP(hidden=(16,), dropout=0.1), base=Gaussian(event_shape=(D,)),
            coupling=COUPLINGS.build("exact"), sigma=0.1)
  mix, cfm = MixFlow(total_steps=40, **kw), CFM(**kw)
  assert mix.groups == ("velocity",)
  batch = _batch()
  params = cfm.init(rng, batch)
  for s in range(12):  # includes steps that would be base steps
    key = jax.random.key(s)
    a, m = mix.loss(params, key, batch, jnp.array(s))
    np.testing.assert_array_equal(a, cfm.loss(params, key, batch, jnp.array(s))[0])
    assert float(m["base_step"]) == 0.0
    assert mix.active(s) == {"velocity": True}


def test_generate_draws_hard_samples_from_the_predicted_mixture(rng):
  method = _method()
  batch = _batch()
  params = method.init(rng, batch)
  x = method.generate(params, jax.random.key(2), batch, num_steps=2)
  assert x.shape == (B, D) and np.all(np.isfinite(np.asarray(x)))
  # Zero velocity: generation returns the base draw, which is hard.
  params = dict(params, velocity=jax.tree.map(jnp.zeros_like, params["velocity"]))
  x = method.generate(params, jax.random.key(2), batch, num_steps=2)
  np.testing.assert_allclose(x, method.base.sample(params["base"], jax.random.key(2), batch),
                             atol=1e-6)


def test_build_from_config_and_init_from_data(rng):
  c = ml_collections.ConfigDict(dict(
      method=dict(name="mixflow", base_every=2, warmup=0.25, alternating=0.5, cooldown=0.25),
      model=dict(name="mlp", hidden=(8,)),
      base=dict(name="gmm", num_modes=2, hidden=(8,), data_init="kmeans"),
      coupling=dict(name="exact")))
  method = build_lib.build_method(c, event_shape=(D,), cond_dim=C, total_steps=12,
                                  num_conditions=2)
  assert isinstance(method, MixFlow) and method.groups == ("velocity", "base")
  assert (method.planner.warmup_end, method.planner.alternating_end) == (3, 9)
  params = method.init(rng, _batch())
  x = np.concatenate([np.full((50, D), -3.0), np.full((50, D), 3.0)])
  new = method.init_from_data(params, x, np.repeat([0, 1], 50))
  locs, _ = method.base.mixture(new["base"], _batch())
  np.testing.assert_allclose(np.sort(np.asarray(locs[0, :, 0])), [-3.0, 3.0], atol=1e-5)
  assert new["velocity"] is params["velocity"]


# -- alternating updates through the real trainer -----------------------------
def _alternate(rng, active_group_grads):
  """Trains 12 single-step dispatches, checking which group each step updates."""
  rs = np.random.default_rng(0)
  pops = Populations(names=["a", "b"], samples=[rs.normal(size=(32, D)) + 2, rs.normal(size=(32, D))],
                     descriptors=rs.normal(size=(2, C)), splits=["train", "train"])
  total = 12
  method = _method(total_steps=total, warmup=0.25, alternating=0.5, cooldown=0.25, base_every=2,
                   active_group_grads=active_group_grads)
  base_steps = {5, 8}  # alternating = [3, 9): v v B v v B
  opt = {g: optax.adam(1e-2) for g in method.groups}
  trainer = Trainer(method, opt, batch_size=B, populations_per_batch=2, ema_decay=0.0)
  data, ids = trainer.replicate(pack(pops)), trainer.replicate(jnp.arange(2, dtype=jnp.int32))
  state = trainer.init(rng, data, ids)
  run_key = jax.random.key(9)

  def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  for step in range(total):
    state = jax.device_get(state)  # the trainer donates its input buffers
    new, metrics = trainer.run(trainer.replicate(state), data, ids, run_key, 1)
    is_base = step in base_steps
    assert same(new.params["base"], state.params["base"]) == (not is_base), step
    assert same(new.opt_state["base"], state.opt_state["base"]) == (not is_base), step
    assert same(new.params["velocity"], state.params["velocity"]) == is_base, step
    assert same(new.opt_state["velocity"], state.opt_state["velocity"]) == is_base, step
    assert metrics["base_step"][0] == float(is_base)
    assert metrics["phase"][0] == (0 if step < 3 else 1 if step < 9 else 2)
    state = new
  return jax.device_get(state.params)


def test_trainer_alternates_groups_exactly(rng):
  """Both gradient paths update exactly the planner's group and train the same parameters.

  `active_group_grads` differentiates only the active group (a `lax.switch`
  in the trainer): the same gradients up to float rounding.
  """
  full = _alternate(rng, active_group_grads=False)
  active = _alternate(rng, active_group_grads=True)
  assert jax.tree.structure(full) == jax.tree.structure(active)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(active)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_paper_baseline_encoder_is_never_trained(rng):
  """The reference's CFM baseline: a frozen random condition encoder with dropout 0.5."""
  rs = np.random.default_rng(0)
  pops = Populations(names=["a", "b"], samples=[rs.normal(size=(32, D)) + 2, rs.normal(size=(32, D))],
                     descriptors=rs.normal(size=(2, C)), splits=["train", "train"])
  twin = _method(total_steps=6, base=Gaussian(event_shape=(D,)), cond_encoder="paper_baseline")
  assert twin.groups == ("velocity",)
  trainer = Trainer(twin, {"velocity": optax.adam(1e-2)}, batch_size=B, populations_per_batch=2,
                    ema_decay=0.0)
  data, ids = trainer.replicate(pack(pops)), trainer.replicate(jnp.arange(2, dtype=jnp.int32))
  state = jax.device_get(trainer.init(rng, data, ids))
  enc = state.params["cond_encoder"]["params"]
  assert enc["Dense_0"]["kernel"].shape == (C, 128) and enc["Dense_1"]["kernel"].shape == (128, C)
  new, _ = trainer.run(trainer.replicate(state), data, ids, jax.random.key(3), 6)
  new = jax.device_get(new)
  for a, b in zip(jax.tree.leaves(state.params["cond_encoder"]),
                  jax.tree.leaves(new.params["cond_encoder"])):
    np.testing.assert_array_equal(a, b)  # never updated ...
  assert not all(np.array_equal(a, b) for a, b in zip(  # ... while the velocity field is
      jax.tree.leaves(state.params["velocity"]), jax.tree.leaves(new.params["velocity"])))
  # It sits in front of the velocity field, with dropout in training only.
  batch, params = _batch(), new.params
  t, x = jnp.full((B,), 0.5), batch["x1"]
  plain = MixFlow(model=twin.model, base=twin.base, coupling=twin.coupling, total_steps=6)
  assert not np.allclose(twin.network(params, t, x, batch["cond"]),
                         plain.network(params, t, x, batch["cond"]))
  drop = [twin.network(params, t, x, batch["cond"], train=True,
                       rngs={"dropout": jax.random.key(s)}) for s in (0, 1)]
  assert not np.allclose(*drop)
  np.testing.assert_array_equal(twin.network(params, t, x, batch["cond"]),
                                twin.network(params, t, x, batch["cond"]))
  with pytest.raises(ValueError, match="needs a fixed base"):
    _method(cond_encoder="paper_baseline")  # a trained GMM base


def test_time_sampling_switch_reaches_mixflow():
  # "What if MixFlow used CellFlux's skewed t?": one config line.
  from flowzoo.methods import cfm as cfm_lib
  t = np.asarray(_method(time_sampling="skewed").sample_time(jax.random.key(0), 100_000))
  assert abs(t.mean() - cfm_lib.SKEWED_TIME_MEAN) < 3e-3
  u = np.asarray(_method().sample_time(jax.random.key(0), 1000))
  np.testing.assert_array_equal(u, jax.random.uniform(jax.random.key(0), (1000,)))
  with pytest.raises(ValueError, match="time_sampling must be one of"):
    _method(time_sampling="edm")

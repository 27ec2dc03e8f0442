"""Train step: group masking, non-finite detection, no retracing (N devices: test_multiprocess)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowzoo.data.populations import Populations, pack
from flowzoo.methods.method import Method
from flowzoo.train import Trainer, make_optimizer
from tests.helpers import tiny_letters_config


def toy_data():
  pops = Populations(names=["a", "b"], samples=[np.ones((8, 2)), -np.ones((8, 2))],
                     descriptors=np.eye(2), splits=["train", "train"])
  return pack(pops), jnp.arange(2)


class TwoGroups(Method):
  """Quadratic loss in two groups; `base` is active on odd steps only."""

  groups = ("velocity", "base")

  def __init__(self, nan_at=-1):
    self.nan_at = nan_at

  def init(self, rng, batch):
    return {"velocity": {"w": jnp.ones(2)}, "base": {"w": jnp.ones(2)}, "fixed": jnp.ones(())}

  def loss(self, params, rng, batch, step):
    loss = (jnp.sum((params["velocity"]["w"] - batch["x1"].mean(0)) ** 2)
            + jnp.sum(params["base"]["w"] ** 2))
    loss = jnp.where(step == self.nan_at, jnp.nan, loss)
    return loss, {}

  def active(self, step):
    odd = step % 2 == 1
    return {"velocity": ~odd, "base": odd}


def make_trainer(method):
  opt = {g: make_optimizer(name="adam", lr=0.1) for g in method.groups}
  return Trainer(method, opt, batch_size=4, populations_per_batch=2, ema_decay=0.5)


def test_inactive_group_is_unchanged_bit_for_bit():
  data, ids = toy_data()
  trainer = make_trainer(TwoGroups())
  state = trainer.init(jax.random.key(0), data, ids)
  rng = jax.random.key(1)
  for step in range(4):
    before = jax.device_get(state)
    state, _ = trainer.run(state, data, ids, rng, 1)
    after = jax.device_get(state)
    frozen, moved = ("base", "velocity") if step % 2 == 0 else ("velocity", "base")
    np.testing.assert_array_equal(after.params[frozen]["w"], before.params[frozen]["w"])
    chex_equal = jax.tree.map(np.array_equal, after.opt_state[frozen], before.opt_state[frozen])
    assert all(jax.tree.leaves(chex_equal)), f"optimizer state of {frozen} moved at step {step}"
    assert not np.array_equal(after.params[moved]["w"], before.params[moved]["w"])
    np.testing.assert_array_equal(after.params["fixed"], 1.0)  # not in any group


def test_non_finite_loss_names_the_step():
  data, ids = toy_data()
  trainer = make_trainer(TwoGroups(nan_at=6))
  state = trainer.init(jax.random.key(0), data, ids)
  state, _ = trainer.run(state, data, ids, jax.random.key(1), 4)
  with pytest.raises(FloatingPointError, match="at step 6"):
    trainer.run(state, data, ids, jax.random.key(1), 4)


def test_run_compiles_once():
  data, ids = toy_data()
  trainer = make_trainer(TwoGroups())
  state = trainer.init(jax.random.key(0), data, ids)
  for _ in range(3):
    state, m = trainer.run(state, data, ids, jax.random.key(1), 2)
  assert m["loss"].shape == (2,)
  assert trainer._multi._cache_size() == 1
  assert int(state.step) == 6


def test_streamed_batches_reproduce_the_in_step_draws_bit_for_bit():
  # `run_batches` (host batches, e.g. the crops pipeline) must be the same update
  # as `run` given the same minibatches: the draws of `run` are replayed as host data.
  data, ids = toy_data()
  trainer = make_trainer(TwoGroups())
  rng = jax.random.key(1)
  draw = jax.jit(lambda step: trainer.sample(
      data, ids, jax.random.split(jax.random.fold_in(rng, step))[0]))
  batches = jax.device_get([draw(s) for s in range(3)])
  stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
  ref, m_ref = trainer.run(trainer.init(jax.random.key(0), data, ids), data, ids, rng, 3)
  state = trainer.init_from_batch(jax.random.key(0), batches[0])
  state, m = trainer.run_batches(state, stacked, rng)
  chex_equal = jax.tree.map(np.array_equal, jax.device_get(state), jax.device_get(ref))
  assert all(jax.tree.leaves(chex_equal))
  np.testing.assert_array_equal(m["loss"], m_ref["loss"])
  with pytest.raises(ValueError, match=r"batch\['cond'\] has 2 rows .* global batch_size is 4"):
    trainer.run_batches(state, {k: v[:, :2] for k, v in stacked.items()}, rng)


def test_optimizer_errors():
  with pytest.raises(KeyError, match="Unknown optimizer 'adamm'"):
    make_optimizer(name="adamm")
  with pytest.raises(ValueError, match="lr must be > 0"):
    make_optimizer(lr=0.0)


@pytest.mark.parametrize("field", ["lr", "grad_clip", "weight_decay", "b1", "b2", "decay_rate"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_optimizer_rejects_non_finite_fields(field, value):
  # NaN slipped through `lr <= 0`; lr=inf made the params NaN after one update.
  with pytest.raises(ValueError, match=rf"optimizer {field} must be a finite number, got {value}"):
    make_optimizer(name="adamw", schedule="exponential", **{field: value})


def test_non_finite_lr_from_the_config_names_the_group():
  from flowzoo.experiment import setup  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"group 'velocity'.*lr must be a finite number, got inf"):
    setup(tiny_letters_config(**{"optim.lr": float("inf")}))


def test_exponential_schedule_decays_by_rate_per_period():
  """SGD steps scale with lr * rate ** (step / decay_steps) (WFM App. E.1 schedule)."""
  opt = make_optimizer(name="sgd", lr=0.5, schedule="exponential", decay_rate=0.25, decay_steps=2)
  params = jnp.zeros(())
  state = opt.init(params)
  steps = []
  for _ in range(5):
    upd, state = opt.update(jnp.ones(()), state, params)
    steps.append(-float(upd))
  np.testing.assert_allclose(steps, 0.5 * 0.25 ** (np.arange(5) / 2), rtol=1e-6)
  with pytest.raises(ValueError, match="exponential schedule needs 0 < decay_rate"):
    make_optimizer(schedule="exponential", decay_rate=1.5)

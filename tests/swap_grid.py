"""The swap-safety grid: every registered method x base x coupling x model (tests/test_swaps_*.py).

"What if MixFlow used a U-Net, or CellFlux a Sinkhorn coupling?" must be one
config line that either works or fails before anything is compiled with a
message naming the components. The grid is every registered combination
whose base and method agree on the state space (a base's `state_space` None
fits any); mismatched state spaces are refused too (one case per pair below).

Every accepted combination is traced through init and a full train step
(`jax.eval_shape`: every shape, dtype and refusal, no XLA compile). A
covering subset (`TRAINED`) also compiles and trains 2 steps: every pair of
components that meet in a step - method x base, method x coupling, method x
model, base x coupling - trains in at least one combination, so a part that
compiles alone but not beside another is caught, without compiling all ~64
accepted combinations on 2 cores. An accepted combination with a pair that no
`TRAINED` combination covers fails, naming the pair (a newly registered
component needs a trained combination). The U-Net trains once per method
here and fully in tests/models/test_unet.py.
"""

import itertools

import jax
import numpy as np
import pytest

import flowzoo  # noqa: F401  (registers every component)
from experiments.configs import common
from flowzoo.experiment import setup
from flowzoo.registry import BASES, COUPLINGS, METHODS, MODELS

# Tiny data and models per state space (seconds per compile on 2 cores).
DATA = {
    "euclidean": dict(name="bbbc021_sim", dim=3, descriptor_dim=4, cells_per_population=8,
                      control_cells_per_plate=4, num_plates=2, plates_per_compound=1),
    "bures": dict(name="gaussian_spiral", num=8),
    "pointclouds": dict(name="digits_clouds", digits="01"),
}
MODEL_KW = {"mlp": dict(hidden=(8,), cond_embed=4), "unet": dict(base_channels=8, channel_mult=(1,),
                                                               emb_dim=8, norm_groups=2),
            "transformer": dict(width=8, num_blocks=1, num_heads=2)}
METHOD_KW = {"mixflow": dict(warmup=0.25, alternating=0.5, cooldown=0.25, base_every=1)}


def _state_space(registry, name):
  return getattr(registry.get(name), "state_space", None)


def _grid():
  for m, b, c, mo in itertools.product(METHODS.names(), BASES.names(), COUPLINGS.names(),
                                       MODELS.names()):
    if _state_space(BASES, b) in (None, _state_space(METHODS, m)):
      yield m, b, c, mo


GRID = list(_grid())
# The fast tier (`-m fast`): each method with the components its configs use.
FAST = {("cfm", "gaussian", "independent", "mlp"), ("mixflow", "gmm", "exact", "mlp"),
        ("bwfm", "wishart", "rounded_matching", "mlp"),
        ("wfm", "gaussian_clouds", "independent", "transformer")}
# The covering subset (module docstring): FAST, one U-Net per method, then
# greedily each combination (in GRID order) that covers a new pair.
TRAINED = FAST | {
    ("bwfm", "wishart", "exact", "unet"), ("bwfm", "wishart", "independent", "mlp"),
    ("bwfm", "wishart", "sinkhorn", "mlp"),
    ("cfm", "empirical", "exact", "mlp"), ("cfm", "empirical", "independent", "mlp"),
    ("cfm", "empirical", "rounded_matching", "mlp"), ("cfm", "empirical", "sinkhorn", "mlp"),
    ("cfm", "gaussian", "exact", "mlp"), ("cfm", "gaussian", "rounded_matching", "mlp"),
    ("cfm", "gmm", "independent", "mlp"), ("cfm", "gmm", "rounded_matching", "mlp"),
    ("cfm", "gmm", "sinkhorn", "unet"),
    ("mixflow", "empirical", "exact", "mlp"), ("mixflow", "empirical", "independent", "mlp"),
    ("mixflow", "empirical", "rounded_matching", "mlp"), ("mixflow", "gaussian", "sinkhorn", "unet"),
    ("wfm", "gaussian_clouds", "exact", "mlp"), ("wfm", "gaussian_clouds", "rounded_matching", "mlp"),
    ("wfm", "gaussian_clouds", "sinkhorn", "mlp"),
}


def pairs(combo) -> set:
  """The component pairs that meet in a train step of `combo` (method, base, coupling, model)."""
  m, b, c, mo = combo
  return {("method", m, "base", b), ("method", m, "coupling", c), ("method", m, "model", mo),
          ("base", b, "coupling", c)}


COVERED = set().union(*map(pairs, TRAINED))


def trains(combo) -> bool:
  """Whether the grid compiles and trains `combo` (else: traced through a train step)."""
  return combo in TRAINED


def config_for(method, base, coupling, model):
  """A tiny config of this combination (data of the method's state space)."""
  c = common.base_config()
  c.dataset = dict(DATA[_state_space(METHODS, method)])
  c.data.batch_size = 4
  c.method = dict(name=method, **METHOD_KW.get(method, {}))
  c.base, c.coupling = dict(name=base), dict(name=coupling)
  c.model = dict(name=model, **MODEL_KW[model])
  c.train.update(steps=2, steps_per_dispatch=2, log_every=2, ckpt_every=2)
  c.eval.splits = ("train",)
  return common.finalize(c)


def params(method: str) -> list:
  """pytest params of `method`'s combinations (the fast tier marked)."""
  return [pytest.param(*g, marks=[pytest.mark.fast] if g in FAST else [])
          for g in GRID if g[0] == method]


def check_combination(method, base, coupling, model):
  """Traces and (see `trains`) trains 2 steps, or asserts the refusal names the components."""
  combo = (method, base, coupling, model)
  config = config_for(*combo)
  try:
    exp = setup(config)
  except (ValueError, KeyError, TypeError) as e:
    msg = str(e)
    assert combo not in TRAINED, f"TRAINED lists a refused combination: {msg}"
    # The refusal names the components that do not fit (registered names).
    named = [n for n in combo if repr(n) in msg]
    assert named, f"refusal does not name the components: {msg}"
    return
  state, logs = jax.eval_shape(
      lambda s: exp.trainer._multi_step(s, exp.packed, exp.train_ids, jax.random.key(1), 2),  # pylint: disable=protected-access
      exp.abstract_state())
  assert state.step.shape == () and logs["loss"].shape == (2,)
  if not trains(combo):
    uncovered = sorted(pairs(combo) - COVERED)
    assert not uncovered, (f"no TRAINED combination covers {uncovered}: add one with them "
                           "to tests/swap_grid.py TRAINED.")
    return
  state, logs = exp.train(exp.init(), 2)
  assert int(state.step) == 2 and np.all(np.isfinite(logs["loss"]))
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))

"""MixFlow with the exact coupling on 2 forced CPU devices pairs and trains as on 1.

`flowzoo.train.Trainer` jits one global step over a "data" mesh, so the
coupling sees the whole minibatch on any number of devices: rows are paired
within their population (here 2 populations of 8 rows per batch of 16, each
split across both devices), exactly. The 2-device runs need their own
process (XLA_FLAGS must be set before JAX initialises); the 1-device
reference runs in the test process.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[2]

def pair_and_train(solver: str, group_size=None) -> dict:
  """One sharded minibatch's pairing and 6 train steps, on this process's devices."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flowzoo.bases.mixture import GMM  # pylint: disable=import-outside-toplevel
  from flowzoo.couplings.exact import Exact  # pylint: disable=import-outside-toplevel
  from flowzoo.data.populations import Populations, pack  # pylint: disable=import-outside-toplevel
  from flowzoo.methods.mixflow import MixFlow  # pylint: disable=import-outside-toplevel
  from flowzoo.models.mlp import MLP  # pylint: disable=import-outside-toplevel
  from flowzoo.train import Trainer, make_optimizer  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  pops = Populations(names=["a", "b", "c"], descriptors=rng.normal(size=(3, 4)),
                     samples=[rng.normal(size=(20, 3)) + k for k in range(3)],
                     splits=["train"] * 3)
  coupling = Exact(solver=solver, group_size=group_size)
  method = MixFlow(model=MLP(hidden=(16,), act="silu", cond_embed=8),
                   base=GMM(event_shape=(3,), num_modes=2, hidden=(8,), dropout=0.0),
                   coupling=coupling, total_steps=20, warmup=0.0, alternating=1.0,
                   cooldown=0.0, base_every=1)
  trainer = Trainer(method, {g: make_optimizer(lr=1e-2) for g in method.groups},
                    batch_size=16, populations_per_batch=2)
  data, ids = trainer.replicate(pack(pops)), jnp.arange(3)
  # The pairing of one sharded minibatch, as the train step computes it;
  # the first key that draws two different populations.
  draw = jax.jit(lambda r: trainer.sample(data, ids, r))
  batch = next(b for b in map(draw, jax.random.split(jax.random.key(3), 20))
               if len(set(np.asarray(b["group"]).tolist())) == 2)
  x0 = jax.device_put(jnp.asarray(rng.normal(size=(16, 3)), jnp.float32),
                      trainer.batch_sharding)
  _, j = jax.jit(lambda x0, b: coupling(None, x0, b["x1"], groups=b["group"]))(x0, batch)
  state = trainer.init(jax.random.key(0), data, ids)
  state, m = trainer.run(state, data, ids, jax.random.key(1), 6)
  leaves = [np.asarray(x).ravel() for x in jax.tree.leaves(state.params)]
  return dict(devices=jax.device_count(), shards=len(batch["x1"].sharding.device_set),
              x0=np.asarray(x0).tolist(), x1=np.asarray(batch["x1"]).tolist(),
              group=np.asarray(batch["group"]).tolist(), j=np.asarray(j).tolist(),
              loss=m["loss"].tolist(), params=np.concatenate(leaves).tolist())


_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    from tests.couplings.test_exact_sharded import pair_and_train
    print(json.dumps({{s: pair_and_train(s) for s in {solvers!r}}}))
""")
SOLVERS = ("lapx", "hungarian")


@pytest.fixture(scope="module")
def runs() -> tuple[dict, dict]:
  """(1 device, {solver: 2 devices}): the 2-device runs in a subprocess with 2
  forced CPU devices (XLA_FLAGS before JAX starts), both solvers; meanwhile
  the 1-device reference in this process (no forced device count here)."""
  import jax  # pylint: disable=import-outside-toplevel
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")  # + conftest's flags
             + " --xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  with subprocess.Popen([sys.executable, "-c", _SCRIPT.format(repo=str(REPO), solvers=SOLVERS)],
                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        cwd=REPO) as proc:
    assert jax.device_count() == 1
    one = pair_and_train("scipy")
    # A timeout: a collective deadlock fails the test instead of hanging CI.
    out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return one, json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_devices_pair_and_train_as_one(runs, solver):
  one_device, two = runs[0], runs[1][solver]
  assert one_device["devices"] == 1 and two["devices"] == 2 and two["shards"] == 2
  # Same minibatch, and every population's rows paired exactly within it
  # across both device shards (rows 0-7 and 8-15 are one population each,
  # each split 4 + 4 over the devices).
  np.testing.assert_array_equal(two["group"], one_device["group"])
  x0, x1, group, j = (np.asarray(two[k]) for k in ("x0", "x1", "group", "j"))
  np.testing.assert_array_equal(group[j], group)
  assert len(np.unique(group)) == 2
  for label in np.unique(group):
    rows = np.flatnonzero(group == label)
    cost = ((x0[rows, None] - x1[None, rows]) ** 2).sum(-1)
    r, c = linear_sum_assignment(cost)
    np.testing.assert_array_equal(j[rows], rows[c[np.argsort(r)]])
  np.testing.assert_array_equal(j, one_device["j"])
  np.testing.assert_allclose(two["loss"], one_device["loss"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(two["params"], one_device["params"], rtol=1e-3, atol=1e-5)

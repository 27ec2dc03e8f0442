"""Defaults shared by every experiment config (train loop, optimizer, eval)."""

from __future__ import annotations

import ml_collections

from flowzoo import config as config_lib


def base_config() -> ml_collections.ConfigDict:
  """Every field a run reads; experiment configs fill in the components."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = dict(name="")
  c.data = dict(batch_size=256, populations_per_batch=1)
  c.method = dict(name="cfm")
  c.model = dict(name="mlp")
  c.base = dict(name="gaussian")
  c.coupling = dict(name="independent")
  c.optim = dict(name="adam", lr=1e-3, schedule="constant", warmup_steps=0, grad_clip=1.0,
                 weight_decay=0.0, b1=0.9, b2=0.999, decay_rate=0.97, decay_steps=1000)
  # Per parameter group overrides of `optim` fields. Both groups any method
  # here has are declared (every method: "velocity"; MixFlow: "base"), so
  # `--config.optim_overrides.<group>.lr=...` works on every config; a group
  # the method lacks is ignored with a warning (experiment.setup).
  c.optim_overrides = dict(velocity={}, base={})
  # unroll: no XLA loop over a dispatch's steps (flowzoo.train.Trainer; conv nets on CPU).
  c.train = dict(steps=10_000, steps_per_dispatch=100, log_every=500, ckpt_every=2_000,
                 keep_checkpoints=2, ema_decay=0.999, unroll=False)
  # Learned baselines trained and evaluated beside this config by
  # `experiments.run`: arm name -> "key=value;..." overrides of this config
  # (flowzoo.config.baseline_arms); an empty string disables an arm.
  c.baselines = dict()
  c.eval = dict(splits=("train", "validation", "heldout"), solver="euler", num_steps=32,
                guidance=1.0, metrics=("w1", "w2", "mmd", "energy"), max_samples=2000,
                samples_per_condition=0, chunk=1024, plot_conditions=10,
                # "split/metric": evaluate the kept checkpoint scoring lowest there
                # (MixFlow §5.1); "" = the last checkpoint.
                select="")
  return c


finalize = config_lib.finalize
replace_section = config_lib.replace_section

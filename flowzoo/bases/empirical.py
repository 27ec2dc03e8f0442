"""Empirical source: control cells of the same condition (CellFlux §3, PRiMeFlow's
"FlowMatching PCA OT" ablation, CellFlow).

The source sample of a row is a control sample drawn from the dataset's
`sources` for that row's condition (e.g. DMSO cells of the same plate), which
`flowzoo.data.populations.sample_batch` puts in `batch["x0"]`. Optional
Gaussian noise keeps the source absolutely continuous (CellFlux adds noise to
the control image for the same reason).
"""

from __future__ import annotations

import jax

from flowzoo.bases.base import Base
from flowzoo.registry import BASES


@BASES.register("empirical")
class Empirical(Base):
  """x0 = control sample of the row's condition (+ noise * N(0, I)).

  The noise is added to every row, in training and at generation alike.
  CellFlux (Eq. 5, App. C) adds it in training only, to a row with
  probability p_e = 0.5; that variant is not implemented (the base does not
  know whether it is sampled for training: `CFM` passes `train=False` both
  times, `train` meaning dropout), and no config here uses this base's noise.
  """

  needs_sources = True

  def __init__(self, *, noise: float = 0.0):
    if noise < 0:
      raise ValueError(f"empirical base: noise must be >= 0, got {noise}.")
    self.noise = float(noise)

  def sample(self, params, rng, batch, *, train=False):
    del params, train
    if "x0" not in batch:
      raise ValueError("the empirical base needs source samples (batch['x0']): "
                       "the dataset has no `sources` (control cells).")
    x0 = batch["x0"]
    return x0 + self.noise * jax.random.normal(rng, x0.shape, x0.dtype) if self.noise else x0

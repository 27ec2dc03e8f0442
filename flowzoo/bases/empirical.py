"""Empirical source: control cells of the same condition (CellFlux §3, PRiMeFlow's
"FlowMatching PCA OT" ablation, CellFlow).

The source sample of a row is a control sample drawn from the dataset's
`sources` for that row's condition (e.g. DMSO cells of the same plate), which
`flowzoo.data.populations.sample_batch` puts in `batch["x0"]`.
"""

from __future__ import annotations

from flowzoo.bases.base import Base
from flowzoo.registry import BASES


@BASES.register("empirical")
class Empirical(Base):
  """x0 = a control sample of the row's condition (`batch["x0"]`).

  CellFlux's noise augmentation of x0 lives in the method, not here: in
  training (Eq. 5: `cfm`'s `source_noise`, `source_noise_prob`) and at
  generation (its code's N(0, I) on x0: `cfm`'s `inference_noise`); without
  it generation starts from the measured control samples (Algorithm 1).
  """

  needs_sources = True
  state_space = None  # the sources are the data's own kind of sample

  def sample(self, params, rng, batch, *, train=False):
    del params, rng, train
    if "x0" not in batch:
      raise ValueError("the empirical base needs source samples (batch['x0']): "
                       "the dataset has no `sources` (control cells).")
    return batch["x0"]

"""Empirical source: control cells of the same condition (CellFlux §3, PRiMeFlow's
"FlowMatching PCA OT" ablation, CellFlow).

The source sample of a row is a control sample drawn from the dataset's
`sources` for that row's condition (e.g. DMSO cells of the same plate), which
`flowzoo.data.populations.sample_batch` puts in `batch["x0"]`.
"""

from __future__ import annotations

import jax

from flowzoo.bases.base import Base
from flowzoo.registry import BASES


@BASES.register("empirical")
class Empirical(Base):
  """x0 = a control sample of the row's condition (`batch["x0"]`).

  CellFlux's noise augmentation of x0 in training (Eq. 5) lives in the
  method (`cfm`'s `source_noise`, `source_noise_prob`). At generation the
  paper's Algorithm 1 starts from the measured control samples, so with a
  few controls many generated samples repeat one deterministic ODE path
  (20 control wells give 20 distinct "samples", however many are drawn).
  CellFlux's code adds N(0, I) to x0 at inference: `inference_noise` is its
  standard deviation (0 = the paper's Algorithm 1).

  Args:
    inference_noise: std of the Gaussian noise added to x0 when not training.
  """

  needs_sources = True
  state_space = None  # the sources are the data's own kind of sample

  def __init__(self, *, inference_noise: float = 0.0):
    if inference_noise < 0:
      raise ValueError(f"empirical base: inference_noise must be >= 0, got {inference_noise}.")
    self.inference_noise = float(inference_noise)

  def sample(self, params, rng, batch, *, train=False):
    del params
    if "x0" not in batch:
      raise ValueError("the empirical base needs source samples (batch['x0']): "
                       "the dataset has no `sources` (control cells).")
    x0 = batch["x0"]
    if train or not self.inference_noise:
      return x0
    return x0 + self.inference_noise * jax.random.normal(rng, x0.shape, x0.dtype)

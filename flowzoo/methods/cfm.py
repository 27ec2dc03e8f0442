"""Conditional flow matching (MixFlow Eq. 5; PRiMeFlow Algorithm 1; CellFlux §3, Eq. 5).

    pair         (x0, x1) from the coupling: independent (vanilla CFM), or
                 minibatch OT (OT-CFM, MixFlow Eq. 6); CellFlux perturbs a
                 source x0 with probability p_e: x0 <- x0 + eps * N(0, I) (Eq. 5)
    interpolate  x_t ~ N((1 - t) x0 + t x1, sigma^2 I)      (PRiMeFlow Algorithm 1)
    target       u_t = x1 - x0                              (MixFlow Eq. 4)
    loss         E || v_theta(t, x_t; y) - u_t ||^2          (MixFlow Eq. 5)

with y replaced by the null condition with probability `p_uncond`, so one
network gives both v_c and v_u for classifier-free guidance
(`flowzoo.guidance`). Generation starts from the base's own samples.

Switches between the papers and their reference code (defaults: the papers'):

* `decide_per`: "sample" draws the noise augmentation (p_e) and the condition
  drop (p_c) for every row, as CellFlux's Algorithm 1 does; "batch" draws each
  once per minibatch, as its code does (yuhui-zh15/CellFlux
  `training/train_loop.py`: `torch.rand(1) < class_drop_prob`,
  `random.random() > noise_prob`).
* `time_sampling`: "uniform" t ~ U(0, 1) (CellFlux Fig. 2a, MixFlow Eq. 5) or
  "skewed", the EDM log-normal skew of CellFlux's code (`skewed_time`,
  `--skewed_timesteps`): t = 1 / (1 + exp(-1.2 + 1.2 z)), z ~ N(0, 1),
  clipped to [1e-4, 1]; mean 0.7194 (`SKEWED_TIME_MEAN`), median 0.7685,
  std 0.2014: most steps near the target end.
* `inference_noise`: N(0, s^2 I) added to x0 at generation (CellFlux's code).
* `cond_encoder`: "paper_baseline" puts the MixFlow reference's condition
  encoder in front of the velocity network, frozen at its random
  initialisation (`ConditionEncoder`), as in that code's CFM baseline.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowzoo.geometry import euclidean
from flowzoo.methods.method import Keys, Method, Pairs
from flowzoo.registry import METHODS


DECIDE_PER = ("sample", "batch")
TIME_SAMPLING = ("uniform", "skewed")
COND_ENCODERS = ("none", "paper_baseline")
# CellFlux's code (EDM, Karras et al. 2022, P_mean / P_std): sigma = exp(P_MEAN + P_STD z).
SKEW_P_MEAN, SKEW_P_STD, SKEW_T_MIN = -1.2, 1.2, 1e-4
SKEWED_TIME_MEAN = 0.7194  # E[t] of `skewed_time` (quadrature: 0.719386)


def skewed_time(rng: jax.Array, shape) -> jax.Array:
  """t = clip(1 / (1 + sigma), 1e-4, 1), log sigma ~ N(-1.2, 1.2^2) (CellFlux's code).

  yuhui-zh15/CellFlux `training/train_loop.py: skewed_timestep_sample`, EDM's
  log-normal noise levels mapped to flow time; its t = 1 is the data, as here.
  Mean `SKEWED_TIME_MEAN` = 0.7194.
  """
  sigma = jnp.exp(SKEW_P_MEAN + SKEW_P_STD * jax.random.normal(rng, shape))
  return jnp.clip(1.0 / (1.0 + sigma), SKEW_T_MIN, 1.0)


class ConditionEncoder(nn.Module):
  """The MixFlow reference's condition encoder, Linear(C, 128), dropout, ReLU, Linear(128, C).

  Lotfollahi-lab/MixFlow `models/GeneExpression.py: lower_dim_embedding_perturbation`
  (Xavier-uniform weights, biases 0.01; `prob_dropout_conditionencoder` 0.5).
  Its output feeds the velocity field; in that code's CFM baseline only the
  base's optimizer holds it, so it is never trained.
  """

  hidden: int = 128
  rate: float = 0.5

  @nn.compact
  def __call__(self, cond: jax.Array, *, train: bool = False) -> jax.Array:
    init = dict(kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.constant(0.01))
    h = nn.Dense(self.hidden, **init)(cond)
    h = nn.Dropout(self.rate, deterministic=not train)(h)
    return nn.Dense(cond.shape[-1], **init)(nn.relu(h))


@METHODS.register("cfm")
class CFM(Method):
  """Vanilla (OT-)CFM; the coupling decides independent vs minibatch OT.

  Args:
    model, base, coupling, p_uncond, group_coupling: see `Method`.
    sigma: constant path noise (PRiMeFlow Algorithm 1); 0 = straight paths.
    source_noise: std of CellFlux's training-time noise on x0 (Eq. 5; its
      Algorithm 1 uses N(0, I), i.e. 1.0); 0 disables it.
    source_noise_prob: probability p_e that a row's x0 is perturbed
      (CellFlux App. C: 0.5).
    inference_noise: std of N(0, I) noise added to every x0 at generation
      only. CellFlux's code does this (1.0); its Algorithm 1 does not. With an
      empirical base of a few control samples it is what makes generated
      samples distinct: without it every draw from one control well follows
      the same deterministic path.
    decide_per: "sample" (CellFlux Algorithm 1) or "batch" (its code): one
      draw per row or per minibatch for the noise augmentation and the
      condition drop (module docstring).
    time_sampling: "uniform" or "skewed" (CellFlux's code, mean 0.7194;
      `skewed_time`).
    cond_encoder: "none" (the network embeds the descriptor itself, trained)
      or "paper_baseline": the MixFlow reference's CFM baseline, whose
      condition encoder (`ConditionEncoder`) stays at its random
      initialisation (it sits in no optimizer group) and applies dropout
      `cond_encoder_dropout` to its hidden layer in training.
    cond_encoder_dropout: that dropout rate (reference: 0.5).
  """

  name = "cfm"
  geometry = euclidean

  def __init__(self, *, model, base, coupling, sigma: float = 0.0, p_uncond: float = 0.0,
               group_coupling: bool = True, source_noise: float = 0.0,
               source_noise_prob: float = 0.5, inference_noise: float = 0.0,
               decide_per: str = "sample", time_sampling: str = "uniform",
               cond_encoder: str = "none", cond_encoder_dropout: float = 0.5):
    super().__init__(model=model, base=base, coupling=coupling, p_uncond=p_uncond,
                     group_coupling=group_coupling)
    for field, value, valid in (("decide_per", decide_per, DECIDE_PER),
                                ("time_sampling", time_sampling, TIME_SAMPLING),
                                ("cond_encoder", cond_encoder, COND_ENCODERS)):
      if value not in valid:
        raise ValueError(f"{self.name}: {field} must be one of {valid}, got {value!r}.")
    if not 0.0 <= cond_encoder_dropout < 1.0:
      raise ValueError(f"{self.name}: cond_encoder_dropout must be in [0, 1), got "
                       f"{cond_encoder_dropout}.")
    if sigma < 0:
      raise ValueError(f"{self.name}: sigma must be >= 0, got {sigma}.")
    if source_noise < 0:
      raise ValueError(f"{self.name}: source_noise must be >= 0, got {source_noise}.")
    if not 0.0 <= source_noise_prob <= 1.0:
      raise ValueError(f"{self.name}: source_noise_prob must be in [0, 1], got "
                       f"{source_noise_prob}.")
    if inference_noise < 0:
      raise ValueError(f"{self.name}: inference_noise must be >= 0, got {inference_noise}.")
    self.sigma = float(sigma)
    self.source_noise, self.source_noise_prob = float(source_noise), float(source_noise_prob)
    self.inference_noise = float(inference_noise)
    self.decide_per, self.time_sampling = decide_per, time_sampling
    self.cond_encoder = (ConditionEncoder(rate=float(cond_encoder_dropout))
                         if cond_encoder == "paper_baseline" else None)

  # -- per-row or per-minibatch decisions, t ---------------------------------------------
  def decide(self, rng: jax.Array, p: float, b: int) -> jax.Array:
    """`[b]` bool, True with probability p: per row, or one draw for all (`decide_per`)."""
    if self.decide_per == "batch":
      return jnp.broadcast_to(jax.random.bernoulli(rng, p, ()), (b,))
    return jax.random.bernoulli(rng, p, (b,))

  def keep_condition(self, rng, b):
    return self.decide(rng, 1.0 - self.p_uncond, b)

  def sample_time(self, rng, b):
    if self.time_sampling == "skewed":
      return skewed_time(rng, (b,))
    return super().sample_time(rng, b)

  # -- network: optionally behind the reference's frozen condition encoder ---------------
  def init(self, rng, batch):
    params = super().init(rng, batch)
    if self.cond_encoder is not None:  # static: the default parameters are unchanged
      params["cond_encoder"] = self.cond_encoder.init(
          jax.random.fold_in(rng, 1), self.cond(batch["cond"], 1.0))
    return params

  def network(self, params, t, x, cond, *, mask=None, train=False, rngs=None):
    if self.cond_encoder is not None:
      enc_rngs = None if rngs is None else {"dropout": jax.random.fold_in(rngs["dropout"], 1)}
      cond = self.cond_encoder.apply(params["cond_encoder"], cond, train=train, rngs=enc_rngs)
    return super().network(params, t, x, cond, mask=mask, train=train, rngs=rngs)

  def pair(self, params, keys: Keys, batch, step) -> Pairs:
    """Coupled pairs; with `source_noise`, CellFlux's augmentation of x0 (Eq. 5).

    After the coupling: tau pairs the measured source samples, the
    augmentation only moves the path's start.
    """
    pairs = super().pair(params, keys, batch, step)
    if not self.source_noise:  # static: the default key layout is unchanged
      return pairs
    x0 = pairs.x0
    e_rng, p_rng = jax.random.split(jax.random.fold_in(keys.base, 1))
    hit = self.decide(p_rng, self.source_noise_prob, x0.shape[0])
    noise = self.source_noise * jax.random.normal(e_rng, x0.shape, x0.dtype)
    return pairs._replace(x0=x0 + jnp.where(hit.reshape(-1, *(1,) * (x0.ndim - 1)), noise, 0.0))

  def generation_sources(self, params, rng, batch):
    """The base's draw, plus `inference_noise` * N(0, I) (CellFlux's code) when set."""
    if not self.inference_noise:  # static: the default generation is unchanged
      return super().generation_sources(params, rng, batch)
    b_rng, n_rng = jax.random.split(rng)
    x0 = super().generation_sources(params, b_rng, batch)
    return x0 + self.inference_noise * jax.random.normal(n_rng, x0.shape, x0.dtype)

  def interpolate(self, x0, x1, t, rng):
    return euclidean.interpolate(x0, x1, t, sigma=self.sigma, rng=rng)

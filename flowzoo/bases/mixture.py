"""Descriptor-conditioned Gaussian mixture base of MixFlow (§3, Eqs. 6-7; §5.1).

    mu_GMM(Theta, p) = sum_i p_i N(Theta_i, sigma^2 I),
    Theta = h_Theta(y) in R^{I x D},  p = h_p(y) in S^{I-1},

with a fixed component variance sigma^2 (reference code: 0.01). Samples are
drawn with the Gumbel-max trick; in training the argmax is relaxed to a
Gumbel-softmax at temperature tau (reference: 0.5) so that L_geo (Eq. 7) is
differentiable w.r.t. both h_Theta and h_p:

    w = softmax((log p + g) / tau),  g ~ Gumbel(0, 1)^I,
    x0 = sum_i w_i Theta_i + sigma eps,  eps ~ N(0, I).

At sampling time (`train=False`) w = onehot(argmax(log p + g)), an exact draw
from the mixture (MixFlow §3.2).

Mode locations ("means"):
* "mlp": Theta = c + h_Theta(y), an MLP on the descriptor plus learnable
  offsets c `[I, D]` (zero unless set from data, see `init_from_data`).
* "free": Theta = c, free learnable modes shared by all conditions; only the
  weights depend on y (the letters set-up of §5.1, with I = number of training
  conditions and mode i initialised from a sample of condition i).

Dropout inside h_Theta and h_p is switched by a flag that may be a traced
boolean, so MixFlow's training planner can turn it off in the cool-down phase
inside one jitted step (Algorithm 1, lines 11-15).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flowzoo.bases.base import Base
from flowzoo.registry import BASES

MEANS = ("mlp", "free")
DATA_INITS = ("none", "kmeans", "per_condition")


class Head(nn.Module):
  """MLP y -> R^features with switchable dropout after each hidden layer.

  Attributes:
    hidden: hidden widths.
    features: output width.
    rate: dropout rate.
  """

  hidden: Sequence[int]
  features: int
  rate: float = 0.0

  @nn.compact
  def __call__(self, y: jax.Array, dropout: bool | jax.Array) -> jax.Array:
    """`y` `[B, C]` -> `[B, features]`; `dropout` a bool or traced bool scalar."""
    h = y
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f"dense_{i}")(h))
      if self.rate > 0 and dropout is not False:
        # Inverted dropout with a traced on/off switch (flax's nn.Dropout
        # needs a Python bool for `deterministic`).
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, h.shape)
        h = jnp.where(dropout, jnp.where(keep, h / (1.0 - self.rate), 0.0), h)
    return nn.Dense(self.features, name="out")(h)


class MixtureNet(nn.Module):
  """descriptors `[B, C]` -> mode locations `[B, I, D]`, log-weights `[B, I]`."""

  num_modes: int
  dim: int
  means: str
  hidden: Sequence[int]
  rate: float

  @nn.compact
  def __call__(self, cond: jax.Array, dropout: bool | jax.Array):
    b, i, d = cond.shape[0], self.num_modes, self.dim
    logits = Head(self.hidden, i, self.rate, name="h_p")(cond, dropout)
    if self.means == "mlp":
      centres = self.param("centres", nn.initializers.zeros, (i, d))
      offsets = Head(self.hidden, i * d, self.rate, name="h_theta")(cond, dropout)
      locs = centres + offsets.reshape(b, i, d)
    else:
      # Distinct random modes until set from data, like N(0, I) draws.
      centres = self.param("centres", nn.initializers.normal(1.0), (i, d))
      locs = jnp.broadcast_to(centres, (b, i, d))
    return locs, jax.nn.log_softmax(logits, axis=-1)


@BASES.register("gmm")
class GMM(Base):
  """MixFlow's trainable mixture base (see the module docstring).

  Args:
    event_shape: data event shape (wired by the framework); D = its size.
    num_modes: number of mixture components I >= 1.
    variance: fixed component variance sigma^2 > 0.
    temperature: Gumbel-softmax temperature tau > 0 (training samples).
    means: "mlp" (h_Theta(y)) or "free" (learnable modes shared by all y).
    hidden: hidden widths of the h_Theta and h_p MLPs.
    dropout: dropout rate in h_Theta and h_p, in [0, 1).
    straight_through: training samples are exact (hard) mixture draws whose
      gradient is the Gumbel-softmax one; False (reference default) trains on
      the soft relaxation.
    data_init: what `init_from_data` does: "kmeans" (centres = K-means
      centres of the training samples, as the reference code), "per_condition"
      (centre i = a random sample of the i-th training condition, §5.1) or
      "none".
  """

  trainable = True

  def __init__(self, *, event_shape: Sequence[int], num_modes: int = 8, variance: float = 0.01,
               temperature: float = 0.5, means: str = "mlp", hidden: Sequence[int] = (128,),
               dropout: float = 0.1, straight_through: bool = False, data_init: str = "kmeans"):
    if int(num_modes) != num_modes or num_modes < 1:
      raise ValueError(f"gmm: num_modes (I) must be an integer >= 1, got {num_modes}.")
    if not variance > 0:
      raise ValueError(f"gmm: variance (sigma^2) must be > 0, got {variance}.")
    if not temperature > 0:
      raise ValueError(f"gmm: temperature must be > 0, got {temperature}.")
    if means not in MEANS:
      raise ValueError(f"gmm: means must be one of {MEANS}, got {means!r}.")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"gmm: dropout must be in [0, 1), got {dropout}.")
    if any(int(w) < 1 for w in hidden):
      raise ValueError(f"gmm: hidden widths must be >= 1, got {tuple(hidden)}.")
    if data_init not in DATA_INITS:
      raise ValueError(f"gmm: data_init must be one of {DATA_INITS}, got {data_init!r}.")
    self.event_shape = tuple(event_shape)
    self.dim = math.prod(self.event_shape)
    self.num_modes = int(num_modes)
    self.variance, self.temperature = float(variance), float(temperature)
    self.means, self.straight_through, self.data_init = means, bool(straight_through), data_init
    self.net = MixtureNet(self.num_modes, self.dim, means, tuple(int(w) for w in hidden),
                          float(dropout))

  def init(self, rng, batch):
    return self.net.init({"params": rng}, batch["cond"], False)

  def mixture(self, params, batch, *, dropout: bool | jax.Array = False,
              rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mixture of each row's descriptor: (Theta `[B, I, D]`, log p `[B, I]`).

    Args:
      params: from `init`.
      batch: needs `cond` `[B, C]`.
      dropout: dropout on/off in h_Theta, h_p (Python or traced bool).
      rng: dropout key; needed unless `dropout` is False.
    """
    if dropout is not False and rng is None:
      raise ValueError("gmm: dropout needs an rng.")
    rngs = {"dropout": rng} if rng is not None else {}
    return self.net.apply(params, batch["cond"], dropout, rngs=rngs)

  def sample(self, params, rng, batch, *, train=False, dropout=None):
    """One source sample per row (see `Base.sample`).

    Args:
      train: Gumbel-softmax (differentiable) samples; otherwise exact draws.
      dropout: dropout switch (bool or traced bool); defaults to `train`.
    """
    d_rng, g_rng, n_rng = jax.random.split(rng, 3)
    locs, log_p = self.mixture(params, batch, dropout=train if dropout is None else dropout,
                               rng=d_rng)
    scores = log_p + jax.random.gumbel(g_rng, log_p.shape, log_p.dtype)
    hard = jax.nn.one_hot(jnp.argmax(scores, axis=-1), self.num_modes, dtype=locs.dtype)
    if train:
      soft = jax.nn.softmax(scores / self.temperature, axis=-1)
      # Straight-through: hard value, Gumbel-softmax gradient.
      w = hard + soft - jax.lax.stop_gradient(soft) if self.straight_through else soft
    else:
      w = hard
    mean = jnp.einsum("bi,bid->bd", w, locs)
    x0 = mean + math.sqrt(self.variance) * jax.random.normal(n_rng, mean.shape, mean.dtype)
    return x0.reshape(x0.shape[0], *self.event_shape)

  def init_from_data(self, params, x: np.ndarray, groups: np.ndarray | None = None, *,
                     seed: int = 0):
    """Sets the mode centres from training data (host side, outside jit).

    Call once after `init` with the training samples, before training. With
    means="mlp" the last layer of h_Theta is zeroed so that h_Theta(y) equals
    the centres for every y at the start (the reference code instead
    pre-trains h_Theta to regress the K-means centres).

    Args:
      params: from `init`.
      x: `[N, *event]` training samples.
      groups: `[N]` condition index of each row (needed for "per_condition").
      seed: K-means / sample choice seed.
    Returns:
      updated params (unchanged when data_init == "none").
    """
    if self.data_init == "none":
      return params
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if x.shape[1] != self.dim:
      raise ValueError(f"gmm.init_from_data: samples have {x.shape[1]} features, "
                       f"expected {self.dim}.")
    rs = np.random.default_rng(seed)
    if self.data_init == "kmeans":
      centres = kmeans_centres(x, self.num_modes, rs)
    else:
      if groups is None or len(groups) != len(x):
        raise ValueError("gmm.init_from_data: data_init='per_condition' needs `groups` [N].")
      groups = np.asarray(groups)
      labels = np.unique(groups)
      if self.num_modes != len(labels):  # e.g. `letters` overridden, num_modes not
        logging.warning("gmm: data_init='per_condition' with num_modes=%d for %d training "
                        "conditions; modes are assigned round-robin (MixFlow §5.1 uses one "
                        "mode per condition: set base.num_modes=%d).", self.num_modes,
                        len(labels), len(labels))
      # Mode i <- a sample of the (i mod G)-th training condition (§5.1 uses I = G).
      centres = np.stack([x[rs.choice(np.flatnonzero(groups == labels[i % len(labels)]))]
                          for i in range(self.num_modes)])
    p = jax.tree.map(lambda a: a, params)  # new containers; leaves shared.
    p["params"]["centres"] = jnp.asarray(centres, p["params"]["centres"].dtype)
    if self.means == "mlp":
      out = p["params"]["h_theta"]["out"]
      p["params"]["h_theta"]["out"] = jax.tree.map(jnp.zeros_like, out)
    return p


def kmeans_centres(x: np.ndarray, k: int, rs: np.random.Generator,
                   max_points: int = 20_000) -> np.ndarray:
  """K-means centres `[k, D]` of `x` `[N, D]` (scikit-learn, on a subsample)."""
  from sklearn.cluster import KMeans  # host-only dependency, imported on use.
  if len(x) < k:
    raise ValueError(f"gmm.init_from_data: {len(x)} samples for {k} K-means centres.")
  if len(x) > max_points:
    x = x[rs.choice(len(x), max_points, replace=False)]
  km = KMeans(n_clusters=k, n_init=3, random_state=int(rs.integers(2**31 - 1))).fit(x)
  return km.cluster_centers_.astype(np.float32)

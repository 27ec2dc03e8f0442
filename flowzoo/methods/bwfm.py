"""Bures–Wasserstein flow matching on Gaussians (WFM §3.1, Algorithms 1-2, App. C, D, E.1; Table 2).

Samples are Gaussians packed as `[D + 1, D]` (row 0 mean, rows 1..D covariance;
`flowzoo.geometry.bures`). For a source N(m0, A) from the base and a paired
target N(m1, B), with t ~ U(0, 1):

    (m_t, Sigma_t)          McCann interpolation (Eq. 8)
    (m', Sigma'^BW)         Riemannian velocity (Eq. 10)
    Sigma'^E                = Sigma'^BW Sigma_t + Sigma_t Sigma'^BW (Eq. 9)

`geometry` selects the target, the loss norm and the sampler (WFM §4.1, Table 2):

    "bw"            BW-FM (R): target (m', Sigma'^BW), loss |a - m'|^2 + Tr((S - Sigma'^BW)^2 Sigma_t),
                    generation by Algorithm 2 (Sigma <- U Sigma U, U = I + h S): stays SPD.
    "bw_euclidean"  BW-FM (E): target (m', Sigma'^E) in the same BW tangent norm, Euclidean
                    Euler on (m, Sigma), covariances projected to SPD at the end.
    "frobenius"     Frobenius FM: target (m', Sigma'^E) in the squared Frobenius norm of the
                    concatenated (mean, covariance), Euclidean Euler, projected at the end.

`projection` says when a Euclidean integration (the baselines; "bw" with a
solver other than Algorithm 2) is projected to SPD: "end" (flowzoo's default,
once, after the last step) or "every_step" (after every solver step, as the
reference code's `generate_samples` does for its Euclidean baselines:
DoronHav/WassersteinFlowMatching `bures_wasserstein/BuresWassersteinFlowMatching.py`,
`sigma_t = psd_project(sigma + dt * grad)`), so the network is only ever
evaluated at SPD covariances.

Network (App. E.1): any registered velocity network on the flat vector
(m_t, lower triangle of Sigma_t) of length D + D(D + 1)/2 with Fourier(t)
features (e.g. "mlp"); its output of the same length is read as (a, lower
triangle of a symmetric S). With `separate_networks` (the configs' default)
two copies of the network are trained, one read for the mean velocity a and
one for S, as App. E.1 does ("two separate networks"). Why it matters: the BW
tangent norm weighs S by Sigma_t, which is small next to the means on the
toy families (variances ~0.01 vs means ~1), so in a shared trunk the mean error
dominates every gradient; each network's Adam update is invariant to the scale
of its own loss term. Each copy outputs the full vector (so any registered
network fits) and the unused half gets no gradient.

Solvers: with geometry "bw", solver "euler" (or "euler_bw") is Algorithm 2,
registered as the solver step "euler_bw" in `flowzoo.geometry.bures`; any
other registered solver integrates the equivalent ODE in (m, Sigma)
coordinates, m' = a, Sigma' = S Sigma + Sigma S (Eq. 9), and projects to SPD at
the end. The Euclidean geometries use the generic solvers directly.

Minibatch matching (multisample BW-FM, App. C): an OT coupling (e.g.
"rounded_matching") receives the all-pairs Fréchet (W2^2) cost matrix (Eq. 24)
as its `cost`; "independent" keeps the drawn pairs. Labels condition the
network, with classifier-free guidance when `p_uncond > 0` (as in `cfm`).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flowzoo.geometry import bures
from flowzoo.methods.method import Keys, Method
from flowzoo.registry import METHODS
from flowzoo.sampling import integrate

GEOMETRIES = ("bw", "bw_euclidean", "frobenius")
PROJECTIONS = ("end", "every_step")


def featurize(x: jax.Array) -> jax.Array:
  """Packed Gaussians `[B, D + 1, D]` -> `[B, D + D(D + 1)/2]`: (m, lower triangle of Sigma)."""
  m, cov = bures.unpack_gaussians(x)
  rows, cols = np.tril_indices(m.shape[-1])
  return jnp.concatenate([m, cov[:, rows, cols]], axis=-1)


def to_tangent(out: jax.Array, dim: int) -> jax.Array:
  """Network output `[B, D + D(D + 1)/2]` -> packed (a, S) `[B, D + 1, D]`, S symmetric."""
  rows, cols = np.tril_indices(dim)
  lower = jnp.zeros((out.shape[0], dim, dim), out.dtype).at[:, rows, cols].set(out[:, dim:])
  s = lower + jnp.swapaxes(lower, -1, -2) * (1.0 - jnp.eye(dim, dtype=out.dtype))
  return bures.pack_gaussians(out[:, :dim], s)


def project(x: jax.Array) -> jax.Array:
  """Packed Gaussians with covariances projected to SPD (baselines, WFM §4.1)."""
  m, cov = bures.unpack_gaussians(x)
  return bures.pack_gaussians(m, bures.project_psd(cov))


@METHODS.register("bwfm")
class BWFM(Method):
  """Flow matching between families of Gaussians (module docstring).

  Args:
    model: velocity network on flat vectors (e.g. "mlp").
    base: source Gaussians (e.g. "wishart"), fitted to the training data.
    coupling: minibatch coupling; OT couplings get the Fréchet cost (App. C).
    geometry: one of `GEOMETRIES`.
    p_uncond, group_coupling: see `Method`.
    separate_networks: one network for the mean velocity and one for the
      covariance velocity (App. E.1), instead of one network for both.
    projection: one of `PROJECTIONS`: when a Euclidean integration is
      projected to SPD (module docstring; "every_step" is the reference code's).
    event_shape: `(D + 1, D)`, wired by the framework.
  """

  name = "bwfm"
  state_space = "bures"
  geometry = bures

  def __init__(self, *, model, base, coupling, geometry: str = "bw", p_uncond: float = 0.0,
               group_coupling: bool = True, separate_networks: bool = False,
               projection: str = "end", event_shape: Sequence[int] | None = None):
    if geometry not in GEOMETRIES:
      raise ValueError(f"bwfm: geometry must be one of {GEOMETRIES}, got {geometry!r}.")
    if projection not in PROJECTIONS:
      raise ValueError(f"bwfm: projection must be one of {PROJECTIONS}, got {projection!r}.")
    super().__init__(model=model, base=base, coupling=coupling, p_uncond=p_uncond,
                     group_coupling=group_coupling)
    if not (coupling.keeps_order or coupling.accepts_cost):
      raise ValueError(f"bwfm: coupling {type(coupling).__name__} does not accept a "
                       "precomputed `cost` (needed for the Fréchet cost, App. C).")
    self.event_shape = None
    if event_shape is not None:
      self._check_event_shape(event_shape)
      self.event_shape = tuple(event_shape)
    self.geometry_name = geometry
    self.separate_networks = bool(separate_networks)
    self.projection = projection

  def _check_event_shape(self, event_shape) -> int:
    event_shape = tuple(event_shape)
    if len(event_shape) != 2 or event_shape[0] != event_shape[1] + 1:
      raise ValueError(f"bwfm needs Gaussians packed as (D + 1, D) (row 0 mean, rows 1..D "
                       f"covariance), got event shape {event_shape}.")
    built = getattr(self, "event_shape", None)
    if built is not None and event_shape != built:
      raise ValueError(f"bwfm: Gaussians of dimension {event_shape[1]} (event shape "
                       f"{event_shape}), but the method was built for dimension {built[1]} "
                       f"{built}.")
    return event_shape[1]

  # -- network: flat (m_t, tril Sigma_t) in, packed (a, S) out (App. E.1) --------------------
  def network(self, params, t, x, cond, *, mask=None, train=False, rngs=None):
    """Network prediction (a, S) `[B, D + 1, D]` at packed Gaussians `x`."""
    del mask
    feats, dim = featurize(x), x.shape[-1]
    if not self.separate_networks:
      return to_tangent(self.model.apply(params["velocity"], t, feats, cond, train=train,
                                         rngs=rngs), dim)
    out_m, out_s = (self.model.apply(params["velocity"][k], t, feats, cond, train=train,
                                     rngs=rngs) for k in ("mean", "cov"))
    return to_tangent(jnp.concatenate([out_m[:, :dim], out_s[:, dim:]], axis=-1), dim)

  def init_network(self, rng, batch):
    self._check_event_shape(batch["x1"].shape[1:])
    x = batch["x1"]
    t = jnp.zeros((x.shape[0],))

    def init_net(key):
      return self.model.init(key, t, featurize(x), self.cond(batch["cond"], 1.0), train=False)
    if self.separate_networks:
      k_m, k_s = jax.random.split(rng)
      return {"mean": init_net(k_m), "cov": init_net(k_s)}
    return init_net(rng)

  def init_from_data(self, params, x, groups=None, *, seed: int = 0):
    """Checks all training Gaussians `[N, D + 1, D]` are SPD, then fits the base (App. D)."""
    m, cov = bures.unpack_gaussians(np.asarray(x, np.float64))
    labels = np.zeros(len(m), int) if groups is None else np.asarray(groups)
    for g in np.unique(labels):  # names the condition index and the sample within it
      bures.check_gaussians(m[labels == g], cov[labels == g], f"bwfm training condition {g}")
    return super().init_from_data(params, x, groups, seed=seed)

  # -- pair (App. C: minibatch OT under the Fréchet cost, Eq. 24) ----------------------------
  def split_keys(self, rng):
    b_rng, c_rng, t_rng, d_rng, u_rng = jax.random.split(rng, 5)  # no path noise
    return Keys(b_rng, c_rng, t_rng, None, d_rng, u_rng)

  def pair_cost(self, x0, batch):
    return bures.frechet_cost(x0, batch["x1"])

  def pair(self, params, keys, batch, step):
    self._check_event_shape(batch["x1"].shape[1:])
    return super().pair(params, keys, batch, step)

  # -- interpolate (Eq. 8), target (Eq. 10 / 9), norm ----------------------------------------
  def interpolate(self, x0, x1, t, rng):
    del rng
    return bures.interpolate(x0, x1, t)

  def target_velocity(self, x0, x1, t):
    return bures.target_velocity(x0, x1, t, euclidean=self.geometry_name != "bw")

  def sq_norm(self, v, x, mask):
    return bures.sq_norm(v, x, frobenius=self.geometry_name == "frobenius")

  # -- checks, generation, metrics -------------------------------------------------------------
  def example_batch(self, event_shape, cond_dim):
    d = self._check_event_shape(event_shape)
    batch = super().example_batch(event_shape, cond_dim)
    return dict(batch, x1=batch["x1"].at[:, 1:].set(jnp.eye(d)))

  def generate(self, params, rng, batch, *, solver="euler", num_steps=32, guidance=1.0,
               save_at: Sequence[float] | None = None):
    """Gaussians `[B, D + 1, D]` for the rows of `batch` (Algorithm 2 for geometry "bw").

    With `save_at`, returns `(x1, trajectory [len(save_at), B, D + 1, D])`.
    """
    field = self.velocity_fn(params, batch, guidance)
    x0 = self.base.sample(params["base"], rng, batch, train=False)
    riemannian = self.geometry_name == "bw" and solver in ("euler", "euler_bw")
    if riemannian:
      solver = "euler_bw"
    elif solver == "euler_bw":
      raise ValueError(f"bwfm: solver 'euler_bw' (Algorithm 2) needs geometry 'bw', not "
                       f"{self.geometry_name!r}.")
    elif self.geometry_name == "bw":
      tangent_field = field

      def field(t, x):  # Eq. 9: the same flow in (m, Sigma) coordinates.
        a, s = bures.unpack_gaussians(tangent_field(t, x))
        return bures.pack_gaussians(a, bures.euclidean_derivative(s, bures.unpack_gaussians(x)[1]))
    every_step = not riemannian and self.projection == "every_step"
    out = integrate(field, x0, solver=solver, num_steps=num_steps, save_at=save_at,
                    post_step=project if every_step else None)
    if riemannian or every_step:
      return out  # Algorithm 2 keeps every covariance SPD; so does a projection per step.
    return jax.tree.map(project, out)

  def metrics(self):
    return dict(bures.METRICS)

"""1-nearest-neighbour accuracy between sets of point clouds (WFM Tables 3-4).

1-NNA (Lopez-Paz & Oquab 2017; PointFlow, Yang et al. 2019) pools generated
clouds S_g and reference clouds S_r, classifies each cloud by the set of its
nearest neighbour among all other clouds, and reports the accuracy: 50 % when
the two sets are indistinguishable, 100 % when every cloud's nearest
neighbour lies in its own set (e.g. memorised or collapsed samples).

Distances between two clouds X, Y (over their real points only, padding
ignored), following PointFlow's conventions:
* Chamfer: mean_x min_y |x - y|^2 + mean_y min_x |x - y|^2;
* EMD: exact optimal transport with uniform weights and Euclidean ground cost,
  i.e. W1 between the empirical measures (= the mean matched distance of the
  optimal bijection when |X| = |Y|; POT's network simplex `ot.emd2` otherwise).

How it scales (benchmarks/metrics_pointclouds.py): clouds stay padded
`[n, N, D]` with masks. Pairwise point distances are computed in JAX, a chunk
of clouds against all clouds per call (one compile per padded shape, float32
differences, not the expanded |x|^2 + |y|^2 - 2xy whose cancellation would
blur near-identical clouds). Chamfer is entirely in JAX. EMD costs are
computed there too and solved exactly on the host, in batches: equal-size
pairs by the assignment of `flowzoo.couplings.assignment` (lapx), others
by `ot.emd2`. Chunks have power-of-two sizes, so a few shapes compile once. For 1-NNA only pairs that can still be a nearest
neighbour are solved: W1(X, Y) >= W1 of their projections on a line (a
1-Lipschitz map), exact by sorting, so each cloud visits candidates in
increasing bound (the max over 16 directions) and stops once its best exact
distance is below the next bound; the result equals the full matrix's argmin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

from flowzoo.couplings import assignment

DISTANCES = ("chamfer", "emd")
_CHUNK_ELEMENTS = 1 << 23  # float32 entries of one chunk's [rows, n, N, N] distances
_PAIRS_PER_CHUNK = 1024
_CANDIDATES_PER_ROUND = 8
_BOUND_SLACK = 1e-5  # relative: float32 bound vs distance rounding


# -- per-pair references (float64 numpy; the definitions) -----------------------------------
def chamfer(x: np.ndarray, y: np.ndarray) -> float:
  """Chamfer distance (squared Euclidean) between clouds `[n, D]` and `[m, D]`."""
  d = ((np.asarray(x, np.float64)[:, None] - np.asarray(y, np.float64)[None]) ** 2).sum(-1)
  return float(d.min(1).mean() + d.min(0).mean())


def emd(x: np.ndarray, y: np.ndarray) -> float:
  """Exact W1 (Euclidean ground cost, uniform weights) between two clouds."""
  d = np.sqrt(((np.asarray(x, np.float64)[:, None] - np.asarray(y, np.float64)[None]) ** 2
               ).sum(-1))
  return _w1(d)


def _w1(d: np.ndarray) -> float:
  n, m = d.shape
  if n == m:
    r, c = linear_sum_assignment(d)
    return float(d[r, c].mean())
  return float(ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), d))


# -- padded clouds -------------------------------------------------------------------------
def padded(x: np.ndarray, mask: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
  """Validated clouds `[n, N, D]` with real points first, and masks `[n, N]`."""
  x = np.asarray(x, np.float32)
  if x.ndim != 3:
    raise ValueError(f"{what}: point clouds must be [n, N, D], got shape {x.shape}.")
  if mask is None:
    return x, np.ones(x.shape[:2], bool)
  mask = np.asarray(mask, bool)
  if mask.shape != x.shape[:2]:
    raise ValueError(f"{what}: mask shape {mask.shape} != clouds' {x.shape[:2]}.")
  empty = np.flatnonzero(~mask.any(1))
  if empty.size:
    raise ValueError(f"{what}: {empty.size} empty point cloud(s) (all points masked), "
                     f"e.g. cloud {empty[0]}.")
  order = np.argsort(~mask, axis=1, kind="stable")  # real points first: sizes index prefixes
  x = np.take_along_axis(x, order[..., None], 1)
  x[~np.take_along_axis(mask, order, 1)] = 0.0
  return x, np.take_along_axis(mask, order, 1)


def pool(fake, real, fake_mask, real_mask) -> tuple[np.ndarray, np.ndarray]:
  """Generated then reference clouds in one `[n_g + n_r, N, D]` array with masks."""
  f, fm = padded(fake, fake_mask, "nna (generated)")
  r, rm = padded(real, real_mask, "nna (reference)")
  if f.shape[-1] != r.shape[-1]:
    raise ValueError(f"nna: generated clouds have dimension {f.shape[-1]}, "
                     f"reference clouds {r.shape[-1]}.")
  if not len(f) or not len(r):
    raise ValueError(f"nna: needs at least one generated and one reference cloud, got "
                     f"{len(f)} and {len(r)}.")
  size = max(f.shape[1], r.shape[1])
  pad = lambda a, v: np.pad(a, [(0, 0), (0, size - a.shape[1])] + [(0, 0)] * (a.ndim - 2),  # noqa: E731
                            constant_values=v)
  return (np.concatenate([pad(f, 0.0), pad(r, 0.0)]),
          np.concatenate([pad(fm, False), pad(rm, False)]))


# -- JAX kernels ---------------------------------------------------------------------------
# Padded points are moved this far away instead of masking an [n, N, M]
# distance tensor: one fused pass (squares stay below float32's max).
_FAR = 1e15


def _sq_dist(x: jax.Array, y: jax.Array) -> jax.Array:
  """`[..., N, M]` squared distances between points `[..., N, D]` and `[..., M, D]`.

  A sum over the (small) D written out: XLA:CPU fuses it with the consumer,
  where the broadcast `[..., N, M, D]` difference was materialised (70x
  slower at D = 2, measured).
  """
  d = 0.0
  for k in range(x.shape[-1]):
    d = d + (x[..., :, None, k] - y[..., None, :, k]) ** 2
  return d


@jax.jit
def _half_chamfer(xa, ma, xb, mb):
  """`[r, n]`: mean over real points of cloud a of the nearest real point of cloud b."""
  far = jnp.where(mb[..., None], xb, _FAR)

  def one(args):  # one row cloud against all: [n, N, M] at a time
    x, m = args
    near = jnp.min(_sq_dist(x[None], far), -1)  # [n, N]
    return jnp.sum(jnp.where(m[None], near, 0.0), -1) / jnp.sum(m)

  return jax.lax.map(one, (xa, ma))


@jax.jit
def _pair_costs(xa, xb):
  """Euclidean cost blocks `[P, N, N]` between paired clouds `[P, N, D]`."""
  return jnp.sqrt(_sq_dist(xa, xb))


def _directions(dim: int, count: int = 16) -> np.ndarray:
  """`[K, D]` unit directions: a half circle in 2-D, axes plus fixed random ones above."""
  if dim == 1:
    return np.ones((1, 1))
  if dim == 2:
    angle = np.pi * np.arange(count) / count
    return np.stack([np.cos(angle), np.sin(angle)], 1)
  rand = np.random.default_rng(0).normal(size=(count, dim))
  return np.concatenate([np.eye(dim), rand / np.linalg.norm(rand, axis=1, keepdims=True)])


@jax.jit
def _sliced_bound(pa, sa, pb, sb):
  """Max over directions of the 1-D W1 between projected clouds: a lower bound on W1.

  Projection on a unit direction is 1-Lipschitz, so W1 >= W1 of the
  projections, and in 1-D W1 = int_0^1 |F^-1(u) - G^-1(u)| du, exact here:
  both quantile functions are constant between the merged breakpoints k / n_a
  and l / n_b, so they are read at the midpoints.

  Args:
    pa, pb: `[P, N, K]` projections sorted along N (padding last); sa, sb:
      `[P]` real point counts.
  Returns:
    `[P]` bounds.
  """
  n = pa.shape[1]
  k = jnp.arange(1, n + 1)

  def breaks(s):
    return jnp.where(k[None] <= s[:, None], k[None] / s[:, None], 1.0)

  bp = jnp.sort(jnp.concatenate([breaks(sa), breaks(sb)], 1), 1)  # [P, 2N]
  width = jnp.diff(bp, axis=1, prepend=0.0)
  mid = bp - width / 2

  def quantile(p, s):
    idx = jnp.clip(jnp.ceil(mid * s[:, None]).astype(jnp.int32) - 1, 0, s[:, None] - 1)
    return jnp.take_along_axis(p, idx[..., None], 1)  # [P, 2N, K]

  w1 = jnp.sum(width[..., None] * jnp.abs(quantile(pa, sa) - quantile(pb, sb)), 1)
  return jnp.max(w1, -1)


def _chunks(total: int, per: int):
  for start in range(0, total, per):
    yield start, min(start + per, total)


def _bucket(count: int, cap: int) -> int:
  """`count` rounded up to a power of two, at most `cap`: few shapes, few compiles."""
  return min(cap, 1 << max(0, int(count - 1).bit_length()))


def chamfer_matrix(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Symmetric `[n, n]` Chamfer distances between padded clouds (diagonal 0)."""
  n = len(x)
  pad = np.minimum(np.arange(_bucket(n, 1 << 30)), n - 1)  # power-of-two count: few compiles
  xj, mj = jnp.asarray(x[pad]), jnp.asarray(mask[pad])
  half = np.asarray(_half_chamfer(xj, mj, xj, mj), np.float64)[:n, :n]
  out = half + half.T
  np.fill_diagonal(out, 0.0)
  return out


def emd_pairs(x: np.ndarray, mask: np.ndarray, pairs: np.ndarray) -> np.ndarray:
  """Exact W1 for index pairs `[P, 2]` of padded clouds; returns `[P]` float64."""
  pairs = np.asarray(pairs).reshape(-1, 2)
  out = np.zeros(len(pairs))
  if not len(pairs):
    return out
  sizes = mask.sum(1)
  n_pts = x.shape[1]
  # One chunk shape, one compile: the host solves of a chunk take ~1000x the
  # JAX cost computation, so padding a small last chunk costs nothing.
  per = min(_PAIRS_PER_CHUNK, max(1, _CHUNK_ELEMENTS // (n_pts * n_pts)))
  xj = jnp.asarray(np.where(mask[..., None], x, 0.0))
  for a, b in _chunks(len(pairs), per):
    chunk = pairs[np.minimum(np.arange(a, a + per), len(pairs) - 1)]
    cost = np.asarray(_pair_costs(xj[chunk[:, 0]], xj[chunk[:, 1]]), np.float64)
    valid = mask[chunk[:, 0]][:, :, None] & mask[chunk[:, 1]][:, None, :]
    si, sj = sizes[chunk[:, 0]], sizes[chunk[:, 1]]
    same = np.flatnonzero(si[: b - a] == sj[: b - a])
    if same.size:  # equal sizes: W1 is the mean matched distance of an assignment
      # No warm start: at tens of points scipy takes microseconds cold.
      zeros = np.zeros((same.size, n_pts))
      j = assignment.assign_host(cost[same], valid[same], zeros, zeros)
      matched = np.take_along_axis(cost[same], j[..., None], -1)[..., 0]
      out[a + same] = np.sum(np.where(mask[chunk[same, 0]], matched, 0.0), 1) / si[same]
    for k in np.flatnonzero(si[: b - a] != sj[: b - a]):
      d = cost[k, : si[k], : sj[k]]
      # Uniform weights are valid marginals by construction: skip POT's checks and
      # dual centring (1.5x per call at ~30 points, where they dominate).
      out[a + k] = ot.emd2(np.full(si[k], 1 / si[k]), np.full(sj[k], 1 / sj[k]),
                           np.ascontiguousarray(d), center_dual=False, check_marginals=False)
  return out


def emd_matrix(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Symmetric `[n, n]` EMD (W1) between padded clouds (diagonal 0)."""
  n = len(x)
  i, j = np.triu_indices(n, 1)
  out = np.zeros((n, n))
  out[i, j] = out[j, i] = emd_pairs(x, mask, np.stack([i, j], 1))
  return out


def distance_matrix(x: np.ndarray, mask: np.ndarray | None, distance: str) -> np.ndarray:
  """Symmetric `[n, n]` matrix of `distance` between padded clouds `[n, N, D]`."""
  if distance not in DISTANCES:
    raise KeyError(f"Unknown cloud distance {distance!r}; valid: {sorted(DISTANCES)}.")
  x, mask = padded(x, mask, "distance_matrix")
  return chamfer_matrix(x, mask) if distance == "chamfer" else emd_matrix(x, mask)


def lower_bounds(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`[n, n]` lower bounds on W1 between padded clouds (`_sliced_bound`; diagonal inf)."""
  n, size = x.shape[:2]
  sizes = mask.sum(1)
  proj = np.einsum("npd,kd->npk", x, _directions(x.shape[2]))
  proj = np.sort(np.where(mask[..., None], proj, np.inf), 1)  # padding last
  proj = jnp.asarray(np.where(np.isfinite(proj), proj, 0.0), jnp.float32)
  i, j = np.triu_indices(n, 1)
  out = np.full((n, n), np.inf)
  per = _bucket(len(i), max(1, _CHUNK_ELEMENTS // (4 * size * proj.shape[2])))
  for a, b in _chunks(len(i), per):
    idx = np.minimum(np.arange(a, a + per), len(i) - 1)
    bd = np.asarray(_sliced_bound(proj[i[idx]], jnp.asarray(sizes[i[idx]]), proj[j[idx]],
                                  jnp.asarray(sizes[j[idx]])))[: b - a]
    out[i[a:b], j[a:b]] = out[j[a:b], i[a:b]] = bd
  return out


def emd_nearest(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Index `[n]` of each cloud's nearest other cloud in EMD (ties: lowest index).

  Solves only the pairs that can win (module docstring): candidates in
  increasing lower bound, a few per cloud per round, until the next bound
  exceeds the best exact distance found.
  """
  n = len(x)
  bound = lower_bounds(x, mask)
  order = np.argsort(bound, axis=1, kind="stable")[:, : n - 1]
  dist = np.full((n, n), np.nan)
  pos = np.zeros(n, int)
  active = np.ones(n, bool)
  while active.any():
    todo = set()
    for i in np.flatnonzero(active):
      for j in order[i, pos[i]: pos[i] + _CANDIDATES_PER_ROUND]:
        if np.isnan(dist[i, j]):
          todo.add((min(i, j), max(i, j)))
      pos[i] += _CANDIDATES_PER_ROUND
    if todo:
      pairs = np.array(sorted(todo))
      dist[pairs[:, 0], pairs[:, 1]] = dist[pairs[:, 1], pairs[:, 0]] = emd_pairs(x, mask, pairs)
    best = np.nanmin(np.where(np.isnan(dist), np.inf, dist), 1)
    rows = np.arange(n)
    nxt = bound[rows, order[rows, np.minimum(pos, n - 2)]]
    active &= (pos < n - 1) & (nxt <= best * (1 + _BOUND_SLACK) + 1e-12)
  return np.argmin(np.where(np.isnan(dist), np.inf, dist), 1)


def one_nn_accuracy(dist: np.ndarray, is_fake: np.ndarray) -> float:
  """1-NNA from a pooled distance matrix `[n, n]` and set labels `[n]` bool.

  Each cloud's nearest other cloud (ties: lowest index) predicts its label.
  """
  d = np.array(dist, np.float64)
  np.fill_diagonal(d, np.inf)
  nn = np.argmin(d, axis=1)
  return float(np.mean(is_fake[nn] == is_fake))


def nna(fake: np.ndarray, real: np.ndarray, *, fake_mask: np.ndarray | None = None,
        real_mask: np.ndarray | None = None, distance: str = "chamfer") -> float:
  """1-NN accuracy between generated and reference clouds (0.5 is ideal).

  Args:
    fake: `[n, N, D]` generated clouds; real: `[m, M, D]` reference clouds.
    fake_mask, real_mask: `[n, N]`, `[m, M]` bool, True on real points.
    distance: "chamfer" or "emd".
  Returns:
    accuracy in [0, 1].
  """
  if distance not in DISTANCES:
    raise KeyError(f"Unknown cloud distance {distance!r}; valid: {sorted(DISTANCES)}.")
  x, mask = pool(fake, real, fake_mask, real_mask)
  labels = np.r_[np.ones(len(fake), bool), np.zeros(len(real), bool)]
  if distance == "chamfer":
    return one_nn_accuracy(chamfer_matrix(x, mask), labels)
  return float(np.mean(labels[emd_nearest(x, mask)] == labels))


def nna_chamfer(fake, real, *, fake_mask=None, real_mask=None) -> float:
  """1-NNA with the Chamfer distance (WFM Tables 3-4, "CD")."""
  return nna(fake, real, fake_mask=fake_mask, real_mask=real_mask, distance="chamfer")


def nna_emd(fake, real, *, fake_mask=None, real_mask=None) -> float:
  """1-NNA with the earth mover's distance (WFM Tables 3-4, "EMD")."""
  return nna(fake, real, fake_mask=fake_mask, real_mask=real_mask, distance="emd")


METRICS = {"nna_chamfer": nna_chamfer, "nna_emd": nna_emd}

"""Families of Gaussians as datasets for Bures–Wasserstein FM (WFM §4.1.1, Table 2 toy rows).

Each sample is one Gaussian N(m, Sigma) packed as `[D + 1, D]` (row 0 mean,
rows 1..D covariance; `flowzoo.geometry.bures.pack_gaussians`). Conditions
are labels (one condition for unconditional data) with one-hot descriptors;
every condition is in the "train" split: WFM's Table 2 metric compares the
generated Gaussians with the dataset itself (min W2^2 to it).

Toy families (sizes and shapes are ours; the paper gives none):

* `gaussian_spiral`: means on 1.5 turns of an Archimedean spiral in [-2, 2]^2;
  covariances are ellipses aligned with the spiral's tangent, growing with the
  radius (WFM Fig. 2 / S1: 16 and 128 samples).
* `gaussian_moons`: means from scikit-learn's two moons; ellipses aligned with
  the moon's tangent; one condition per moon ("upper", "lower"), or one
  condition with `conditional=False`.
* `gaussian_sphere`: means on the unit sphere in 3-D; covariances flat along
  the normal with a random anisotropy in the tangent plane.

`gaussian_populations` builds and validates a dataset from (means,
covariances) per condition; real-data families are in `gaussians_cells.py`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from flowzoo.data.populations import Populations
from flowzoo.geometry.bures import check_gaussians, pack_gaussians
from flowzoo.registry import DATASETS


def gaussian_populations(groups: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                         info: str = "", splits: Sequence[str] | None = None,
                         min_eig: float = 1e-6) -> Populations:
  """Populations of packed Gaussians, one condition per entry of `groups`.

  Args:
    groups: condition name -> (means `[n, D]`, covariances `[n, D, D]`).
    info: dataset description.
    splits: split label per condition (default all "train").
    min_eig: smallest accepted covariance eigenvalue relative to the largest.
  Raises:
    ValueError: a covariance that is not symmetric positive definite, or
      means/covariances of mismatched dimensions, naming the condition and sample.
  """
  if not groups:
    raise ValueError("gaussian_populations: no conditions.")
  names, samples, dims = [], [], set()
  for name, (m, cov) in groups.items():
    m, cov = np.asarray(m, np.float64), np.asarray(cov, np.float64)
    check_gaussians(m, cov, f"condition {name!r}", min_eig=min_eig)
    dims.add(m.shape[1])
    names.append(str(name))
    samples.append(pack_gaussians(m, 0.5 * (cov + np.swapaxes(cov, 1, 2))).astype(np.float32))
  if len(dims) != 1:
    raise ValueError(f"gaussian_populations: conditions have Gaussians of different "
                     f"dimensions {sorted(dims)}.")
  k = len(names)
  return Populations(names=names, samples=samples, descriptors=np.eye(k, dtype=np.float32),
                     splits=list(splits) if splits is not None else ["train"] * k, info=info)


def rotated_ellipses(angle: np.ndarray, major: np.ndarray, minor: np.ndarray) -> np.ndarray:
  """2-D covariances `[n, 2, 2]` with std `major` along `angle` and `minor` across."""
  c, s = np.cos(angle), np.sin(angle)
  rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # [n, 2, 2]
  return np.einsum("nij,nj,nkj->nik", rot, np.stack([major ** 2, minor ** 2], -1), rot)


@DATASETS.register("gaussian_spiral")
def gaussian_spiral(*, num: int = 128, turns: float = 1.5, major: float = 0.2,
                    minor: float = 0.06, mean_noise: float = 0.02, seed: int = 0) -> Populations:
  """Gaussians centred on a spiral (WFM §4.1.1, "Spiral - 16" / "Spirals - 128").

  Args:
    num: number of Gaussians.
    turns: turns of the spiral.
    major, minor: ellipse stds along / across the spiral at the outer end
      (scaled by 0.4 + 0.6 r / r_max along the curve).
    mean_noise: std of isotropic noise added to the means.
    seed: sampling seed.
  """
  if num < 1 or not 0 < minor <= major or mean_noise < 0 or turns <= 0:
    raise ValueError(f"gaussian_spiral: need num >= 1, 0 < minor <= major, mean_noise >= 0 "
                     f"and turns > 0; got {num}, {minor}, {major}, {mean_noise}, {turns}.")
  rng = np.random.default_rng(seed)
  theta_max = 2 * np.pi * turns
  theta = np.sort(rng.uniform(0.25 * np.pi, theta_max, num))
  r = 2.0 * theta / theta_max
  m = np.stack([r * np.cos(theta), r * np.sin(theta)], -1) + mean_noise * rng.normal(size=(num, 2))
  # Tangent of (r cos, r sin) with r proportional to theta: (cos - th sin, sin + th cos).
  angle = np.arctan2(np.sin(theta) + theta * np.cos(theta), np.cos(theta) - theta * np.sin(theta))
  size = 0.4 + 0.6 * r / r.max()
  cov = rotated_ellipses(angle, major * size, minor * size)
  return gaussian_populations({"spiral": (m, cov)}, info=f"{num} Gaussians on a spiral (2-D)")


@DATASETS.register("gaussian_moons")
def gaussian_moons(*, num: int = 256, noise: float = 0.05, major: float = 0.15,
                   minor: float = 0.05, conditional: bool = True, seed: int = 0) -> Populations:
  """Gaussians on scikit-learn's two moons (WFM Table 2 "Two Moons").

  Means are standardised two-moons points; ellipses follow the moon's tangent
  with a random size in [0.5, 1] x (major, minor).
  """
  from sklearn.datasets import make_moons
  if num < 2 or not 0 < minor <= major or noise < 0:
    raise ValueError(f"gaussian_moons: need num >= 2, 0 < minor <= major and noise >= 0; "
                     f"got {num}, {minor}, {major}, {noise}.")
  rng = np.random.default_rng(seed)
  pts, label = make_moons(num, noise=noise, random_state=seed)
  # Moon k is the half circle centred at c_k: upper (0, 0), lower (1, 0.5).
  centre = np.where(label[:, None] == 0, [0.0, 0.0], [1.0, 0.5])
  radial = np.arctan2(pts[:, 1] - centre[:, 1], pts[:, 0] - centre[:, 0])
  m = (pts - np.array([0.5, 0.25])) / np.array([0.85, 0.5])
  size = rng.uniform(0.5, 1.0, num)
  cov = rotated_ellipses(radial + np.pi / 2, major * size, minor * size)
  if conditional:
    groups = {"upper": (m[label == 0], cov[label == 0]), "lower": (m[label == 1], cov[label == 1])}
  else:
    groups = {"moons": (m, cov)}
  return gaussian_populations(groups, info=f"{num} Gaussians on two moons (2-D)")


@DATASETS.register("gaussian_sphere")
def gaussian_sphere(*, num: int = 256, tangent: tuple[float, float] = (0.05, 0.2),
                    normal: float = 0.03, seed: int = 0) -> Populations:
  """Gaussians on the unit sphere in 3-D (WFM Table 2 "Sphere (3D)").

  Args:
    num: number of Gaussians.
    tangent: range of the two tangent-plane stds (drawn uniformly per Gaussian,
      along a random tangent direction and its complement).
    normal: std along the sphere's normal.
  """
  lo, hi = tangent
  if num < 1 or not 0 < lo <= hi or normal <= 0:
    raise ValueError(f"gaussian_sphere: need num >= 1, 0 < tangent[0] <= tangent[1] and "
                     f"normal > 0; got {num}, {tangent}, {normal}.")
  rng = np.random.default_rng(seed)
  n = rng.normal(size=(num, 3))
  n /= np.linalg.norm(n, axis=1, keepdims=True)
  u = np.cross(n, rng.normal(size=(num, 3)))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  w = np.cross(n, u)
  s = rng.uniform(lo, hi, (num, 2))
  cov = (s[:, :1, None] ** 2 * np.einsum("ni,nj->nij", u, u)
         + s[:, 1:, None] ** 2 * np.einsum("ni,nj->nij", w, w)
         + normal ** 2 * np.einsum("ni,nj->nij", n, n))
  return gaussian_populations({"sphere": (n, cov)}, info=f"{num} Gaussians on the sphere (3-D)")

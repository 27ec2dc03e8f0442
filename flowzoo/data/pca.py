"""PCA of populations, fitted on training conditions only (scikit-learn, used everywhere)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from flowzoo.data.populations import Populations


def fit_pca(x: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
  """scikit-learn's PCA of `x` `[N, D]` to k components, as `[n, D] -> [n, k]` float32.

  The returned function carries the fitted `PCA` as `.pca`
  (`explained_variance_ratio_`, `components_`). Full SVD: deterministic.
  """
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  if not 1 <= k <= min(x.shape):
    raise ValueError(f"PCA to k={k} components needs 1 <= k <= min(N={x.shape[0]}, "
                     f"D={x.shape[1]}) of the fitting data.")
  pca = PCA(n_components=k, svd_solver="full").fit(x)

  def project(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return pca.transform(v.reshape(len(v), -1)).astype(np.float32)
  project.pca = pca
  return project


def reduce_populations(pops: Populations, k: int) -> Populations:
  """Projects samples and sources to k principal components of the TRAIN samples.

  Fitting on train conditions only keeps the held-out compounds' profiles out
  of the representation: a PCA that saw them would already encode their
  response directions, leaking test information into training (MixFlow
  Fig. 3b varies this k from 50 to 500).
  """
  if len(pops.event_shape) != 1:
    raise ValueError(f"PCA needs vector samples, got event shape {pops.event_shape}.")
  train = pops.split_ids("train")
  pca = fit_pca(np.concatenate([pops.samples[i] for i in train]), k)
  sources = None if pops.sources is None else [pca(s) for s in pops.sources]
  return dataclasses.replace(
      pops, samples=[pca(s) for s in pops.samples], sources=sources,
      info=f"{pops.info} PCA to {k} components fitted on train conditions "
           f"({pca.pca.explained_variance_ratio_.sum():.1%} of train variance).")

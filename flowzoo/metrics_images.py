"""Image metrics of generated single-cell crops: FID, KID and condition accuracy (CellFlux §4).

CellFlux (Table 1-2) scores generated crops against real held-out crops with

* FIDo / KIDo - all generated crops vs all real crops ("overall"),
* FIDc / KIDc - the same per condition (perturbation), then averaged,
* MoA accuracy - a classifier trained on real crops, evaluated on generated
  crops, next to its accuracy on real held-out crops (72.4 % in CellFlux).

CellFlux embeds crops with a pretrained Inception network. Offline we have
none, so the embedding is a hook: `features="morphology"` uses the
CellProfiler-lite features of `flowzoo.morphology`, and any encoder
`FeatureFn` `[N, H, W, C] -> [N, F]` (e.g. a pretrained network the user has)
plugs in the same way. Numbers from different feature maps are not
comparable; KID is reported unscaled (CellFlux's tables multiply it by 100).

Formulas (x, y: features `[n, F]`, `[m, F]`):

* Fréchet distance (Heusel et al. 2017) between the Gaussians fitted to x
  and y: FD = ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^{1/2}), with
  the sample covariances (ddof 1, as pytorch-fid). Tr((S_x S_y)^{1/2}) is
  computed as the sum of the square roots of the eigenvalues of
  S_x^{1/2} S_y S_x^{1/2}: that matrix is symmetric PSD and has the same
  eigenvalues as S_x S_y (AB and BA share them), so `eigh` gives real,
  clipped-non-negative values for singular covariances too - the normal case
  for FIDc, where a condition has fewer crops than features. scipy's `sqrtm`
  of the non-symmetric S_x S_y returns complex noise there and needs an
  eps * I retry that changes the value.
* KID (Bińkowski et al. 2018): the unbiased MMD^2 (U-statistic,
  `metrics_perturbation.mmd_u_from_gram`) with the cubic polynomial kernel
  k(u, v) = (u.v / F + 1)^3, averaged over `num_subsets` random subsets of
  s = min(subset_size, n, m) points of each set (without replacement within
  a subset); its std over subsets is returned too (torch-fidelity's
  defaults: subset_size 1000, num_subsets 100). Unbiased, so it can be
  slightly negative when the sets agree.

Standardisation: morphology features mix areas (~10^3 pixels) with
intensities and ratios (~10^-1), and FD / KID on raw features would measure
little but the areas. `feature_metrics` therefore z-scores every feature
with the mean and std of the REAL crops being evaluated against (all
conditions pooled), and applies that same map to the generated crops:
every model scored against one real set is measured in the same units, and
the generated crops cannot change the yardstick. A feature constant on the
real crops is only centred. Pass `standardize=False` to keep an encoder's
own scale (e.g. to compare Inception FIDs with the literature).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from flowzoo import metrics as metrics_lib
from flowzoo import metrics_perturbation as mp
from flowzoo import morphology

# An image encoder: crops `[N, H, W, C]` -> features `[N, F]`.
FeatureFn = Callable[[np.ndarray], np.ndarray]
FEATURES: dict[str, FeatureFn] = {"morphology": morphology.features}
KID_SUBSET_SIZE = 1000
KID_NUM_SUBSETS = 100


def _feats(x, name: str, min_rows: int = 1) -> np.ndarray:
  """`x` as float64 `[n >= min_rows, F]`; ValueError naming shape/NaN problems."""
  a = metrics_lib._as_points(x, name)  # pylint: disable=protected-access
  if len(a) < min_rows:
    raise ValueError(f"{name} needs at least {min_rows} rows, got shape {a.shape}.")
  return a


def _pair(x, y, min_rows: int, what: str) -> tuple[np.ndarray, np.ndarray]:
  x, y = _feats(x, "x", min_rows), _feats(y, "y", min_rows)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"{what}: x and y must have the same number of features, got "
                     f"{x.shape} and {y.shape}.")
  return x, y


def frechet_from_moments(mu1, s1, mu2, s2) -> float:
  """Fréchet distance between N(mu1, s1) and N(mu2, s2) (module docstring).

  Args:
    mu1, mu2: `[F]` means.
    s1, s2: `[F, F]` symmetric positive semi-definite covariances.

  Returns:
    ||mu1 - mu2||^2 + Tr(s1 + s2 - 2 (s1 s2)^{1/2}) >= 0 (rounding below 0 is clipped).
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (s1, s2))
  f = mu1.shape[0]
  if mu1.shape != (f,) or mu2.shape != (f,) or s1.shape != (f, f) or s2.shape != (f, f):
    raise ValueError(f"need means [F] and covariances [F, F] of one F, got mu1 {mu1.shape}, "
                     f"s1 {s1.shape}, mu2 {mu2.shape}, s2 {s2.shape}.")
  for name, a in (("mu1", mu1), ("s1", s1), ("mu2", mu2), ("s2", s2)):
    if not np.all(np.isfinite(a)):
      raise ValueError(f"{name} contains NaN/inf.")
  for name, s in (("s1", s1), ("s2", s2)):
    scale = max(np.abs(s).max(), 1e-300)
    if not np.allclose(s, s.T, rtol=0, atol=1e-8 * scale):
      raise ValueError(f"{name} is not symmetric (max |S - S^T| = {np.abs(s - s.T).max():.3g}).")
  w, v = np.linalg.eigh((s1 + s1.T) / 2)
  if w.min() < -1e-8 * max(abs(w).max(), 1e-300):
    raise ValueError(f"s1 is not positive semi-definite (smallest eigenvalue {w.min():.3g}).")
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  m = root1 @ ((s2 + s2.T) / 2) @ root1
  lam = np.linalg.eigvalsh((m + m.T) / 2)
  if lam.min() < -1e-8 * max(abs(lam).max(), 1e-300):
    raise ValueError(f"s2 is not positive semi-definite (S1^1/2 S2 S1^1/2 has eigenvalue "
                     f"{lam.min():.3g}).")
  tr_cross = np.sqrt(np.clip(lam, 0, None)).sum()
  value = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross
  return max(float(value), 0.0)


def frechet_distance(x, y) -> float:
  """FID formula on features `x` `[n, F]`, `y` `[m, F]` (n, m >= 2; module docstring)."""
  x, y = _pair(x, y, 2, "frechet_distance (a covariance needs 2 rows)")
  cov = lambda a: np.atleast_2d(np.cov(a, rowvar=False))  # ddof 1, as pytorch-fid
  return frechet_from_moments(x.mean(0), cov(x), y.mean(0), cov(y))


def kid(x, y, *, subset_size: int = KID_SUBSET_SIZE, num_subsets: int = KID_NUM_SUBSETS,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance on features (module docstring).

  Args:
    x: `[n, F]`, y: `[m, F]` features, n, m >= 2.
    subset_size: points per subset and set; capped at min(n, m).
    num_subsets: subsets averaged.
    seed: numpy seed of the subset draws.

  Returns:
    `(mean, std)` of the unbiased MMD^2 over the subsets.
  """
  x, y = _pair(x, y, 2, "kid (the U-statistic needs 2 rows per set)")
  if subset_size < 2 or num_subsets < 1:
    raise ValueError(f"kid needs subset_size >= 2 and num_subsets >= 1, got {subset_size} "
                     f"and {num_subsets}.")
  s, f = min(subset_size, len(x), len(y)), x.shape[1]
  rng = np.random.default_rng(seed)
  kernel = lambda a, b: (a @ b.T / f + 1.0) ** 3
  vals = []
  for _ in range(num_subsets):
    a = x[rng.choice(len(x), s, replace=False)]
    b = y[rng.choice(len(y), s, replace=False)]
    vals.append(mp.mmd_u_from_gram(kernel(a, a), kernel(b, b), kernel(a, b)))
  return float(np.mean(vals)), float(np.std(vals))


def compute_features(crops, features: str | FeatureFn = "morphology") -> np.ndarray:
  """Features `[N, F]` of crops `[N, H, W, C]` through the feature hook.

  Args:
    crops: `[N, H, W, C]` images.
    features: a name in `FEATURES` ("morphology": `flowzoo.morphology.features`
      with crops in [-1, 1]) or any `FeatureFn`.

  Raises:
    ValueError: bad crops, an unknown name, or an encoder output that is not
      a finite `[N, F]` array.
  """
  x = np.asarray(crops)
  if x.ndim != 4 or x.shape[0] == 0:
    raise ValueError(f"crops must be [N >= 1, H, W, C], got shape {x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError("crops contain NaN/inf.")
  if isinstance(features, str):
    if features not in FEATURES:
      raise ValueError(f"unknown features {features!r}; known: {sorted(FEATURES)} or a "
                       "callable [N, H, W, C] -> [N, F].")
    fn = FEATURES[features]
  elif callable(features):
    fn = features
  else:
    raise ValueError(f"features must be a name in {sorted(FEATURES)} or a callable, "
                     f"got {type(features).__name__}.")
  out = np.asarray(fn(x), np.float64)
  if out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] == 0:
    raise ValueError(f"the feature function must map [N, H, W, C] {x.shape} to [N, F>=1], "
                     f"got {out.shape}.")
  if not np.all(np.isfinite(out)):
    raise ValueError("the feature function returned NaN/inf.")
  return out


def feature_metrics(real: Mapping[str, np.ndarray], generated: Mapping[str, np.ndarray], *,
                    standardize: bool = True, kid_subset_size: int = KID_SUBSET_SIZE,
                    kid_num_subsets: int = KID_NUM_SUBSETS, seed: int = 0) -> dict:
  """FIDo, FIDc, KIDo, KIDc on features already computed (see `image_metrics`).

  Args:
    real, generated: condition -> features `[n_c, F]` (n_c >= 2); the same
      conditions in both.
    standardize: z-score with the pooled real features (module docstring).
    kid_subset_size, kid_num_subsets, seed: passed to `kid`.
  """
  missing, extra = sorted(set(real) - set(generated)), sorted(set(generated) - set(real))
  if missing or extra or not real:
    raise ValueError(f"real and generated must name the same, non-empty conditions; "
                     f"missing generated: {missing}, generated only: {extra}.")
  names = list(real)
  r = {c: _feats(real[c], f"real[{c!r}]", 2) for c in names}
  g = {c: _feats(generated[c], f"generated[{c!r}]", 2) for c in names}
  dims = {x.shape[1] for x in (*r.values(), *g.values())}
  if len(dims) > 1:
    raise ValueError(f"feature dimensions differ between sets: {sorted(dims)}.")
  real_all = np.concatenate([r[c] for c in names])
  if standardize:
    mu, sd = real_all.mean(0), real_all.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    r = {c: (x - mu) / sd for c, x in r.items()}
    g = {c: (x - mu) / sd for c, x in g.items()}
    real_all = (real_all - mu) / sd
  gen_all = np.concatenate([g[c] for c in names])
  kid_kw = dict(subset_size=kid_subset_size, num_subsets=kid_num_subsets, seed=seed)
  kid_o, kid_o_std = kid(gen_all, real_all, **kid_kw)
  fid_c = {c: frechet_distance(g[c], r[c]) for c in names}
  kid_c = {c: kid(g[c], r[c], **kid_kw)[0] for c in names}
  return {
      "fid_o": frechet_distance(gen_all, real_all),
      "fid_c": float(np.mean(list(fid_c.values()))),
      "kid_o": kid_o,
      "kid_o_std": kid_o_std,
      "kid_c": float(np.mean(list(kid_c.values()))),
      "fid_per_condition": fid_c,
      "kid_per_condition": kid_c,
      "num_features": real_all.shape[1],
  }


def image_metrics(real_by_condition: Mapping[str, np.ndarray],
                  generated_by_condition: Mapping[str, np.ndarray], *,
                  features: str | FeatureFn = "morphology", **kwargs) -> dict:
  """CellFlux's FIDo / FIDc / KIDo / KIDc of generated crops in a feature space.

  Features are computed once per set (all conditions in one call), then
  scored by `feature_metrics`. To score several models against one real set,
  compute the real features once with `compute_features` and call
  `feature_metrics` directly.

  Example, plugging in an encoder (any `[N, H, W, C] -> [N, F]` function):

      def inception(crops):                      # crops in [-1, 1]
        return my_network.apply(params, crops)   # [N, 2048]
      m = image_metrics(real, generated, features=inception, standardize=False)
      m["fid_o"], m["fid_c"], m["fid_per_condition"]["taxol"]

  Raw 16-bit crops through the morphology features:
  `features=functools.partial(morphology.features, value_range=(0, 65535))`.

  Args:
    real_by_condition, generated_by_condition: condition -> crops
      `[n_c, H, W, C]` (n_c >= 2), the same conditions and crop shape in both.
    features: "morphology" or a `FeatureFn`.
    **kwargs: `feature_metrics` options (standardize, kid_subset_size,
      kid_num_subsets, seed).

  Returns:
    {"fid_o", "fid_c", "kid_o", "kid_o_std", "kid_c"} floats,
    {"fid_per_condition", "kid_per_condition"} condition -> float, and
    "num_features".
  """
  sets = {"real": real_by_condition, "generated": generated_by_condition}
  shapes = {(k, c): np.shape(v) for k, s in sets.items() for c, v in s.items()}
  if len({s[1:] for s in shapes.values()}) > 1:
    raise ValueError(f"all crops must share one [H, W, C]; got {shapes}.")
  feats = {}
  for key, by_cond in sets.items():
    names = list(by_cond)
    if not names:
      raise ValueError(f"{key}_by_condition is empty.")
    f = compute_features(np.concatenate([np.asarray(by_cond[c]) for c in names]), features)
    cuts = np.cumsum([len(by_cond[c]) for c in names])[:-1]
    feats[key] = dict(zip(names, np.split(f, cuts)))
  return feature_metrics(feats["real"], feats["generated"], **kwargs)


def condition_classifier(train_feats, train_labels):
  """The classifier of `condition_accuracy`, fitted once (score many sets with it).

  A multinomial logistic regression on features standardised with the
  training crops (sklearn, lbfgs, C = 1): linear and deterministic, with one
  learned weight per feature, so the few informative features (e.g. nucleus
  area under a drug that shrinks nuclei) are not drowned by dozens of
  uninformative ones as in kNN or nearest-centroid distances, which weigh
  every standardised feature equally. (With only 3-9 wells per compound,
  `metrics_profiles.moa_classifier` uses nearest centroids instead; here
  there are hundreds of crops per class.)

  Args:
    train_feats: `[n, F]` features of REAL training crops; train_labels `[n]`
      (MoA or condition), at least 2 classes.
  Returns:
    the fitted sklearn pipeline (`classes_` are the training labels).
  Raises:
    ValueError: bad shapes or fewer than 2 training classes.
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
  x, y = _labelled(train_feats, train_labels, "train")
  classes = np.unique(y)
  if len(classes) < 2:
    raise ValueError(f"the classifier needs at least 2 training classes, got {classes}.")
  clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
  return clf.fit(x, y)


def classifier_scores(classifier, feats, labels, name: str = "generated") -> dict:
  """{"accuracy", "macro_f1"} of a `condition_classifier` on `[g, F]` feats with labels `[g]`.

  Raises:
    ValueError: bad shapes, a feature count other than the classifier's, or
      a label the classifier never saw (it could not be predicted).
  """
  from sklearn.metrics import f1_score  # pylint: disable=import-outside-toplevel
  x, y = _labelled(feats, labels, name)
  expected = classifier.n_features_in_
  if x.shape[1] != expected:
    raise ValueError(f"feature dimensions differ: {name}_feats has {x.shape[1]}, the "
                     f"classifier was trained on {expected}.")
  unseen = sorted(set(y.tolist()) - set(classifier.classes_.tolist()))
  if unseen:
    raise ValueError(f"{name}_labels has classes absent from training: {unseen}.")
  pred = classifier.predict(x)
  return {"accuracy": float(np.mean(pred == y)),
          "macro_f1": float(f1_score(y, pred, labels=np.unique(y), average="macro"))}


def condition_accuracy(train_feats, train_labels, generated_feats, generated_labels, *,
                       real_feats, real_labels) -> dict:
  """Accuracy of a classifier of real crops on generated crops (CellFlux's MoA accuracy).

  The classifier is `condition_classifier`'s.

  Args:
    train_feats: `[n, F]` features of REAL training crops; train_labels `[n]`
      (MoA or condition), at least 2 classes.
    generated_feats: `[g, F]` features of generated crops; generated_labels `[g]`.
    real_feats: `[r, F]` features of REAL held-out crops; real_labels `[r]`:
      the reference ceiling.

  Returns:
    {"accuracy", "macro_f1"} on the generated crops, {"real_accuracy",
    "real_macro_f1"} on the real held-out crops, "num_classes".

  Raises:
    ValueError: bad shapes, fewer than 2 training classes, or an evaluation
      label the classifier never saw (it could not be predicted).
  """
  clf = condition_classifier(train_feats, train_labels)
  out = classifier_scores(clf, generated_feats, generated_labels, "generated")
  real = classifier_scores(clf, real_feats, real_labels, "real")
  out.update({f"real_{k}": v for k, v in real.items()})
  out["num_classes"] = len(clf.classes_)
  return out


def _labelled(feats, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
  x, y = _feats(feats, f"{name}_feats"), np.asarray(labels)
  if y.shape != (len(x),):
    raise ValueError(f"{name}_labels must have shape ({len(x)},) to match {name}_feats "
                     f"{x.shape}, got {y.shape}.")
  return x, y

"""CellProfiler-lite morphology features of single-cell crops (offline, scikit-image).

CellFlux (§4 "Evaluation metrics", App. H Table 7) scores generated crops
with Inception features (FID/KID), an image MoA classifier and CellProfiler
nuclear-size features. Offline we have no pretrained network, so
`features` measures each crop the way a CellProfiler pipeline would, and
`flowzoo.metrics_images` computes FID/KID/classification on these numbers.

Per crop `[H, W, C]` (channel 0 = DNA/DAPI, for BBBC021 1 = tubulin, 2 = actin):

1. Segmentation.
   * nucleus: Otsu threshold of channel 0, holes filled, connected components
     (8-connectivity); the nucleus is the component with the pixel nearest
     the crop centre (so the one containing the centre when there is one).
   * cell: Otsu threshold of the channel mean, OR the chosen nucleus (a cell
     contains its nucleus), holes filled; the cell is the component holding
     the nucleus (or nearest the centre when there is no nucleus).
   Otsu adapts per crop, so segmentation does not depend on the intensity
   scale. A constant channel has nothing above its threshold: empty mask.
2. Shape of the nucleus and of the cell, with `skimage.measure.regionprops`
   definitions: area, perimeter (`measure.perimeter`, 4-connectivity),
   eccentricity, solidity (area / `convex_hull_image` area), major and minor
   axis length (4 sqrt of the inertia tensor's eigenvalues), all in pixels;
   `nucleus_cell_area_ratio` = nucleus area / cell area; `nucleus_objects` =
   number of DNA components of >= `MIN_OBJECT_PIXELS` pixels in the crop
   (fragmented nuclei, neighbours).
3. Intensity per channel c (input units): mean, std and the 10/50/90 %
   quantiles within the cell mask (`{c}_cell_*`) and over the whole crop
   (`{c}_crop_*`), and the mean within the nucleus (`{c}_nucleus_mean`).
4. Texture per channel: the grey-level co-occurrence matrix of the whole
   crop quantised to `GLCM_LEVELS` levels over the fixed `value_range`
   (`skimage.feature.graycomatrix`, distance 1, angles 0/45/90/135 degrees,
   symmetric, normalised) and its contrast, homogeneity, energy and
   correlation (`graycoprops`), averaged over the angles. The range is fixed,
   not per crop, so a darker generated crop has different texture levels.

Empty masks give finite features: zero shape features, zero ratio, and zero
for every statistic over an empty mask; a constant crop has GLCM correlation
1 (skimage's convention: no variation, perfectly predictable). `FEATURE_NAMES`
lists the 59 features of a 3-channel crop in output order
(`feature_names(C)` for other channel counts).

Input range: the image pipeline scales crops to [-1, 1] (`value_range`
default). For other data pass its range; raw 16-bit BBBC021 crops use only
about a quarter of 0..65535, so normalise them first (see
`benchmarks/morphology_features.py`).

Speed: segmentation (a vectorised Otsu, one `ndimage.label` for the whole
stack), moments, intensities and GLCM properties are vectorised over crops;
only the perimeter, the convex hull (solidity, the largest cost) and the GLCM
counts loop in skimage. There is no `n_jobs`: a worker process would
re-import flowzoo (jax), which costs more than the extraction.

Sanity check on real BBBC021 crops (`python benchmarks/morphology_features.py
[--size 32]`; 843 crops, one plate; 2 shared cores at load 4-6):

    extraction, 843 crops            68x68: 7.6-8.3 s (~9.5 ms/crop)   32x32: 2.7 s
    FID vs DMSO half A (222 crops)   DMSO half B 3.7 ± 1.0, cyclohexamide 15 uM
                                     488 ± 59, 50 uM 660 ± 76 (5 halvings, 68x68)
    KID (same)                       0.01 ± 0.16, 1013 ± 379, 2096 ± 733
    held-out accuracy                DMSO vs cyclohexamide 50 uM 0.991 (majority
                                     0.679); 3 classes (+ 15 uM) 0.879 (majority 0.527)

so two halves of one condition are two orders of magnitude closer than two
conditions, and the dose order shows. The largest differences are actin
texture and intensity (cyclohexamide 50 uM: actin GLCM homogeneity -4.3 sd,
cell actin mean +2.8 sd). 32x32 crops give the same picture (FID 3.7 / 498 /
679, accuracy 0.988 / 0.881).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import feature as sk_feature
from skimage import measure
from skimage.morphology import convex_hull_image

CHANNELS = ("dna", "tubulin", "actin")  # BBBC021 channel order
SHAPES = ("area", "perimeter", "eccentricity", "solidity", "major_axis", "minor_axis")
INTENSITIES = ("mean", "std", "q10", "q50", "q90")
QUANTILES = (0.1, 0.5, 0.9)
TEXTURES = ("contrast", "homogeneity", "energy", "correlation")
GLCM_LEVELS = 16
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
MIN_OBJECT_PIXELS = 5
_CHUNK = 256


def feature_names(num_channels: int = 3) -> tuple[str, ...]:
  """Names of the `features` columns for crops with `num_channels` channels."""
  if num_channels < 1:
    raise ValueError(f"num_channels must be >= 1, got {num_channels}.")
  chans = CHANNELS if num_channels == 3 else tuple(f"ch{c}" for c in range(num_channels))
  names = [f"{obj}_{s}" for obj in ("nucleus", "cell") for s in SHAPES]
  names += ["nucleus_cell_area_ratio", "nucleus_objects"]
  for c in chans:
    names += [f"{c}_{where}_{s}" for where in ("cell", "crop") for s in INTENSITIES]
    names += [f"{c}_nucleus_mean"] + [f"{c}_glcm_{t}" for t in TEXTURES]
  return tuple(names)


FEATURE_NAMES = feature_names(3)


def _check_crops(crops) -> np.ndarray:
  x = np.asarray(crops)
  if x.ndim != 4 or x.shape[0] == 0 or min(x.shape[1:]) < 1:
    raise ValueError(f"crops must be [N >= 1, H, W, C], got shape {x.shape}.")
  if min(x.shape[1:3]) < 3:
    raise ValueError(f"crops must be at least 3x3 pixels to segment, got shape {x.shape}.")
  x = x.astype(np.float64)
  if not np.all(np.isfinite(x)):
    bad = int(np.sum(~np.all(np.isfinite(x), axis=(1, 2, 3))))
    raise ValueError(f"crops contain NaN/inf in {bad} of {x.shape[0]} crops.")
  return x


def otsu_thresholds(images: np.ndarray, nbins: int = 256) -> np.ndarray:
  """`[N]` Otsu thresholds of `[N, H, W]` images, one vectorised pass.

  `skimage.filters.threshold_otsu` per image (256 bins over the image's own
  range, threshold = the centre of the bin maximising the between-class
  variance) without its per-call overhead, which dominated the extractor. A
  constant image gets its value, so `image > threshold` is empty.
  """
  n = images.shape[0]
  x = images.reshape(n, -1)
  lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
  width = np.where(hi > lo, (hi - lo) / nbins, 1.0)
  # np.histogram's uniform bins: the maximum falls into the last bin.
  idx = np.minimum(((x - lo) / width).astype(np.int64), nbins - 1)
  counts = np.bincount((idx + nbins * np.arange(n)[:, None]).ravel(),
                       minlength=n * nbins).reshape(n, nbins).astype(np.float64)
  centres = lo + width * (np.arange(nbins) + 0.5)
  # Bin 0 holds the minimum and the last bin the maximum, so no weight is 0
  # except for a constant image, whose threshold is replaced below.
  w1 = np.cumsum(counts, 1)
  w2 = np.cumsum(counts[:, ::-1], 1)[:, ::-1]
  with np.errstate(invalid="ignore", divide="ignore"):
    m1 = np.cumsum(counts * centres, 1) / w1
    m2 = (np.cumsum((counts * centres)[:, ::-1], 1) / w2[:, ::-1])[:, ::-1]
  between = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
  t = centres[np.arange(n), np.argmax(between, 1)]
  return np.where(hi[:, 0] > lo[:, 0], t, lo[:, 0])


def _in_plane(connectivity: np.ndarray) -> np.ndarray:
  """A 3-D structure connecting pixels within one image of a stack, never across."""
  s = np.zeros((3,) + connectivity.shape, bool)
  s[1] = connectivity
  return s


_STACK_EIGHT = _in_plane(np.ones((3, 3), bool))  # 8-connectivity, CellProfiler's default
_STACK_FOUR = _in_plane(ndimage.generate_binary_structure(2, 1))


def _components(images: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
  """Labels `[N, H, W]` of each image's Otsu foreground (OR `extra`), holes filled.

  One `ndimage.label` call for the stack, so labels are unique across images.
  """
  fg = images > otsu_thresholds(images)[:, None, None]
  if extra is not None:
    fg |= extra
  fg = ndimage.binary_fill_holes(fg, _STACK_FOUR)
  return ndimage.label(fg, _STACK_EIGHT)[0]


def _pick(labels: np.ndarray, score: np.ndarray) -> np.ndarray:
  """`[N, H, W]` mask of the component holding each image's lowest-score pixel.

  `score` is +inf where nothing may be picked; an image without a finite
  score gets an empty mask.
  """
  n = labels.shape[0]
  flat = score.reshape(n, -1)
  best = np.argmin(flat, 1)
  rows = np.arange(n)
  chosen = np.where(np.isfinite(flat[rows, best]), labels.reshape(n, -1)[rows, best], 0)
  return (labels == chosen[:, None, None]) & (labels > 0)


def segment(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Nucleus and cell masks of `[N, H, W, C]` float crops (module docstring, step 1).

  Returns:
    `(nucleus [N, H, W] bool, cell [N, H, W] bool, dna_objects [N] int)`.
  """
  n, h, w, _ = crops.shape
  yy, xx = np.mgrid[:h, :w]
  d2 = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2  # squared distance to the centre
  dna = _components(crops[..., 0])
  nucleus = _pick(dna, np.where(dna > 0, d2, np.inf))
  sizes = np.bincount(dna.ravel())
  image_of = np.zeros(len(sizes), np.int64)
  image_of[dna.ravel()] = np.repeat(np.arange(n), h * w)
  big = np.flatnonzero(sizes >= MIN_OBJECT_PIXELS)
  objects = np.bincount(image_of[big[big > 0]], minlength=n)
  cells = _components(crops.mean(-1), extra=nucleus)
  # The cell component holding the nucleus (inside the cell mask by the OR);
  # without a nucleus, the component nearest the centre.
  has_nucleus = nucleus.any((1, 2))[:, None, None]
  score = np.where(has_nucleus, np.where(nucleus, d2, np.inf),
                   np.where(cells > 0, d2, np.inf))
  return nucleus, _pick(cells, score), objects


def _moment_shapes(masks: np.ndarray) -> np.ndarray:
  """`[N, 4]` area, eccentricity, major and minor axis of `[N, H, W]` masks.

  regionprops' definitions, vectorised over masks: the eigenvalues
  l1 >= l2 of the inertia tensor (central second moments / area) give
  major = 4 sqrt(l1), minor = 4 sqrt(l2), eccentricity = sqrt(1 - l2 / l1)
  (0 when l1 = 0).
  """
  _, h, w = masks.shape
  m = masks.astype(np.float64)
  yy, xx = np.mgrid[:h, :w]
  area = m.sum((1, 2))
  a = np.maximum(area, 1.0)
  dy = yy - ((m * yy).sum((1, 2)) / a)[:, None, None]
  dx = xx - ((m * xx).sum((1, 2)) / a)[:, None, None]
  vyy, vxx, vxy = ((m * u * v).sum((1, 2)) / a for u, v in ((dy, dy), (dx, dx), (dy, dx)))
  half = np.sqrt(((vyy - vxx) / 2) ** 2 + vxy ** 2)
  l1 = np.maximum((vyy + vxx) / 2 + half, 0.0)
  l2 = np.maximum((vyy + vxx) / 2 - half, 0.0)
  ecc = np.where(l1 > 0, np.sqrt(np.clip(1 - l2 / np.where(l1 > 0, l1, 1.0), 0.0, 1.0)), 0.0)
  return np.stack([area, ecc, 4 * np.sqrt(l1), 4 * np.sqrt(l2)], 1)


def _outline(mask: np.ndarray) -> tuple[float, float]:
  """(perimeter, convex hull area) of one `[H, W]` mask as regionprops; 0 if empty."""
  if not mask.any():
    return 0.0, 0.0
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  return float(measure.perimeter(box)), float(convex_hull_image(box).sum())


def shapes(masks: np.ndarray) -> np.ndarray:
  """`[N, 6]` `SHAPES` of `[N, H, W]` bool masks (regionprops definitions; 0 if empty)."""
  area, ecc, major, minor = _moment_shapes(masks).T
  perimeter, hull = np.array([_outline(m) for m in masks]).reshape(-1, 2).T
  solidity = np.where(hull > 0, area / np.maximum(hull, 1.0), 0.0)
  return np.stack([area, perimeter, ecc, solidity, major, minor], 1)


def _masked_stats(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`[N, C, 5]` mean, std, q10, q50, q90 of `x` `[N, P, C]` over pixels `mask` `[N, P]`.

  Vectorised over crops; the quantiles interpolate linearly as `np.quantile`.
  An empty mask gives zeros.
  """
  k = mask.sum(1)[:, None]  # [N, 1]
  m = mask[..., None]
  w = mask.astype(np.float64)
  safe = np.maximum(k, 1)
  mean = np.einsum("np,npc->nc", w, x) / safe
  dev = x - mean[:, None]
  var = np.einsum("np,npc->nc", w, dev * dev) / safe
  # Masked-out pixels sort last, so the first k of each column are the cell's values.
  srt = np.sort(np.where(m, x, np.inf), axis=1)
  srt[np.isinf(srt)] = 0.0  # only read for an empty mask, whose result is zeroed below
  qs = []
  for q in QUANTILES:
    pos = q * (np.maximum(k, 1) - 1)  # [N, 1]
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, np.maximum(k, 1) - 1)
    frac = pos - lo
    a = np.take_along_axis(srt, lo[..., None].repeat(x.shape[2], -1), 1)[:, 0]
    b = np.take_along_axis(srt, hi[..., None].repeat(x.shape[2], -1), 1)[:, 0]
    qs.append(a + frac * (b - a))
  out = np.stack([mean, np.sqrt(var), *qs], -1)
  return np.where(k[..., None] > 0, out, 0.0)


def _crop_stats(x: np.ndarray) -> np.ndarray:
  """`[N, C, 5]` mean, std, q10, q50, q90 of `x` `[N, P, C]` over all pixels."""
  return np.stack([x.mean(1), x.std(1), *np.quantile(x, QUANTILES, axis=1)], -1)


def _textures(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """`[N, C, 4]` GLCM contrast, homogeneity, energy, correlation (angle means)."""
  n, _, _, c = x.shape
  q = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  q = np.minimum((q * GLCM_LEVELS).astype(np.uint8), GLCM_LEVELS - 1)
  # graycoprops takes [levels, levels, distances, angles]: stacking every
  # (crop, channel) GLCM on the distance axis computes each property in one call.
  glcm = np.concatenate([
      sk_feature.graycomatrix(q[i, ..., j], [1], GLCM_ANGLES, levels=GLCM_LEVELS,
                              symmetric=True, normed=True)
      for i in range(n) for j in range(c)], axis=2)
  props = np.stack([sk_feature.graycoprops(glcm, t).mean(1) for t in TEXTURES], -1)
  return props.reshape(n, c, len(TEXTURES))


def _chunk(crops: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """`[N, F]` features of `[N, H, W, C]` validated float64 crops."""
  n, h, w, c = crops.shape
  nucleus, cell, objects = segment(crops)
  nuc_shape, cell_shape = shapes(nucleus), shapes(cell)
  ratio = np.where(cell_shape[:, 0] > 0, nuc_shape[:, 0] / np.maximum(cell_shape[:, 0], 1), 0.0)
  flat = crops.reshape(n, h * w, c)
  nucleus, cell = nucleus.reshape(n, -1), cell.reshape(n, -1)
  n_area = np.maximum(nucleus.sum(1), 1)[:, None]
  per_channel = np.concatenate([
      _masked_stats(flat, cell), _crop_stats(flat),
      (np.einsum("np,npc->nc", nucleus.astype(np.float64), flat) / n_area)[..., None],
      _textures(crops, lo, hi)], -1)  # [N, C, 15] in feature_names order
  return np.concatenate([nuc_shape, cell_shape, ratio[:, None], objects[:, None],
                         per_channel.reshape(n, -1)], 1).astype(np.float64)


def features(crops, *, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """Morphology features of each crop (module docstring lists them).

  Args:
    crops: `[N, H, W, C]` images, channel 0 = DNA; any real dtype. H, W >= 3.
    value_range: `(lo, hi)` of the pixel values, used only to quantise the
      texture (GLCM) levels; values outside are clipped. Default [-1, 1],
      the range of the image pipeline.

  Returns:
    `[N, F]` float64, finite, columns named by `feature_names(C)`
    (`FEATURE_NAMES` for C = 3).

  Raises:
    ValueError: wrong shape, NaN/inf pixels, or an empty/inverted value_range.
  """
  x = _check_crops(crops)
  lo, hi = map(float, value_range)
  if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
    raise ValueError(f"value_range must be finite (lo, hi) with hi > lo, got {value_range}.")
  # Chunks bound the [chunk, H*W, C] temporaries of the vectorised statistics.
  return np.concatenate([_chunk(x[i:i + _CHUNK], lo, hi) for i in range(0, len(x), _CHUNK)])

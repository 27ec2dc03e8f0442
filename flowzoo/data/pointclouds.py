"""Point-cloud datasets of variable size (WFM §4.2, App. E.3 MNIST/Letters; §4.2.1 shapes).

Every dataset returns `Populations` of padded clouds: samples `[n_k, N, D]`
with masks `[n_k, N]` (real points first, padded points 0). Conditions:

* one "train" condition per label (name = label), and
* one "heldout" condition per label with the held-out test clouds (name
  "<label>/test", same descriptor as "<label>"), so that the evaluator
  generates clouds for that descriptor, sized like the test clouds, and
  scores them against unseen data (1-NNA, WFM Tables 3-4).

Sources:
* `digits_clouds` (default, no files): scikit-learn's bundled 8x8 digits.
  As for MNIST in WFM App. E.3, a cloud is the set of pixels above a
  threshold; each pixel becomes one point at its centre plus a uniform
  sub-pixel jitter (drawn once, fixed by `seed`), so clouds are continuous
  rather than on an 8x8 lattice (where distinct digits could have distance
  exactly 0). With the default threshold 6/16 clouds hold ~15-45 points.
* `mnist_clouds`: MNIST IDX files (e.g. ../shared/data/mnist_test), pixels
  above a threshold (~100-200 points per digit).
* `mesh_clouds`: area-weighted uniform samples of OBJ mesh surfaces, one
  condition per mesh, cloud sizes drawn from a range.

Coordinates are standardised with one global shift and scale (mean and
standard deviation of all real points of the dataset, not per cloud), so
shapes keep their relative positions and sizes. The source clouds of
`gaussian_clouds` are centred at 0, so source and target clouds overlap and
entropic OT on the mean-scaled cost converges at the project's epsilon (0.01,
`RoundedMatching`); with raw pixel coordinates (a shift of ~14 px on MNIST)
it does not.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Sequence

import numpy as np

from flowzoo.data.populations import Populations
from flowzoo.registry import DATASETS


# -- building blocks ----------------------------------------------------------------------
def pad_clouds(clouds: Sequence[np.ndarray], num_points: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """Stacks clouds of different sizes into `[n, N, D]` (padded with 0) and masks `[n, N]`."""
  if not clouds:
    raise ValueError("pad_clouds: no clouds.")
  dims = {c.shape[1] for c in clouds}
  if len(dims) != 1:
    raise ValueError(f"pad_clouds: clouds have different point dimensions {sorted(dims)}.")
  sizes = np.array([len(c) for c in clouds])
  if (sizes == 0).any():
    raise ValueError(f"pad_clouds: cloud {int(np.argmin(sizes))} is empty (0 points).")
  n = int(sizes.max()) if num_points is None else int(num_points)
  if sizes.max() > n:
    raise ValueError(f"pad_clouds: a cloud has {sizes.max()} points > num_points={n}.")
  x = np.zeros((len(clouds), n, dims.pop()), np.float32)
  mask = np.arange(n)[None, :] < sizes[:, None]
  for i, c in enumerate(clouds):
    x[i, :len(c)] = c
  return x, mask


def image_to_cloud(image: np.ndarray, threshold: float, rng: np.random.Generator | None
                   ) -> np.ndarray:
  """Pixels of `image` `[H, W]` above `threshold` as points `(col, H-1-row)` (y up).

  With `rng`, each point moves uniformly within its pixel (jitter in [-0.5, 0.5)).
  """
  rows, cols = np.nonzero(image > threshold)
  pts = np.stack([cols, image.shape[0] - 1 - rows], axis=1).astype(np.float64)
  if rng is not None:
    pts += rng.uniform(-0.5, 0.5, pts.shape)
  return pts


def images_to_clouds(images: np.ndarray, threshold: float, jitter: bool, seed: int
                     ) -> list[np.ndarray]:
  """Clouds of every image; raises naming the first image with no pixel above threshold."""
  rng = np.random.default_rng(seed) if jitter else None
  clouds = [image_to_cloud(im, threshold, rng) for im in images]
  empty = [i for i, c in enumerate(clouds) if len(c) == 0]
  if empty:
    raise ValueError(f"{len(empty)} image(s) have no pixel above threshold={threshold} "
                     f"(e.g. image {empty[0]}), giving empty point clouds; lower the threshold.")
  return clouds


def standardise(clouds: Sequence[np.ndarray]) -> list[np.ndarray]:
  """One global shift and scale: all real points get mean 0 and (pooled) std 1."""
  pts = np.concatenate(clouds, 0)
  mean, std = pts.mean(0), pts.std()
  if not std > 0:
    raise ValueError("standardise: all points coincide (zero spread).")
  return [((c - mean) / std).astype(np.float32) for c in clouds]


def labelled_populations(clouds: Sequence[np.ndarray], labels: Sequence, *,
                         test_fraction: float, seed: int, info: str,
                         num_points: int | None = None) -> Populations:
  """Train condition "<label>" and held-out condition "<label>/test" per label (module doc)."""
  if not 0.0 <= test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
  labels = np.asarray(labels)
  classes = sorted(set(labels.tolist()))
  x, mask = pad_clouds(clouds, num_points)
  rng = np.random.default_rng(seed)
  names, samples, masks, desc, splits, label_cov = [], [], [], [], [], []
  for k, c in enumerate(classes):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n_test = int(round(test_fraction * len(idx)))
    if test_fraction > 0 and (n_test == 0 or n_test == len(idx)):
      raise ValueError(f"label {c!r} has {len(idx)} clouds: too few to hold out "
                       f"test_fraction={test_fraction} and still train.")
    parts = [(str(c), "train", idx[n_test:])]
    if n_test:
      parts.append((f"{c}/test", "heldout", idx[:n_test]))
    for name, split, ids in parts:
      ids = np.sort(ids)
      names.append(name)
      samples.append(x[ids])
      masks.append(mask[ids])
      desc.append(np.eye(len(classes), dtype=np.float32)[k])
      splits.append(split)
      label_cov.append(str(c))
  return Populations(names=names, samples=samples, descriptors=np.stack(desc), splits=splits,
                     covariates={"label": label_cov}, masks=masks, info=info)


def _check_labels(wanted: str | Sequence, available: np.ndarray) -> list:
  wanted = [type(available[0])(w) for w in wanted] if len(available) else list(wanted)
  missing = sorted(set(wanted) - set(available.tolist()))
  if missing or not wanted:
    raise ValueError(f"unknown or no digit(s) {missing or wanted}; "
                     f"available: {sorted(set(available.tolist()))}.")
  return wanted


# -- datasets ----------------------------------------------------------------------------
@DATASETS.register("digits_clouds")
def digits_clouds(*, digits: str = "0123456789", threshold: float = 6.0,
                  test_fraction: float = 0.2, jitter: bool = True, seed: int = 0) -> Populations:
  """scikit-learn's 8x8 digits (intensities 0..16) as variable-size 2-D clouds."""
  from sklearn.datasets import load_digits  # bundled with scikit-learn: no download.
  data = load_digits()
  wanted = _check_labels([int(d) for d in str(digits)], data.target)
  keep = np.isin(data.target, wanted)
  clouds = standardise(images_to_clouds(data.images[keep], threshold, jitter, seed))
  return labelled_populations(clouds, data.target[keep], test_fraction=test_fraction,
                              seed=seed, info=f"sklearn digits {digits} as point clouds "
                              f"(pixels > {threshold}/16)")


def read_idx(path: str | Path) -> np.ndarray:
  """Reads an IDX file (MNIST format, optionally gzipped) into a numpy array."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"IDX file {path} does not exist.")
  raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(f"{path} is not an IDX file (bad magic number).")
  dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
  if raw[2] not in dtypes:
    raise ValueError(f"{path}: unknown IDX element type 0x{raw[2]:02x}.")
  ndim = raw[3]
  shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  data = np.frombuffer(raw, dtypes[raw[2]], offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values.")
  return data.reshape(shape)


@DATASETS.register("mnist_clouds")
def mnist_clouds(*, path: str, digits: str = "4", threshold: float = 0.5,
                 max_per_digit: int = 0, test_fraction: float = 0.2, jitter: bool = True,
                 seed: int = 0) -> Populations:
  """MNIST digits as clouds of pixels above `threshold` (intensity in [0, 1]), WFM App. E.3.

  Args:
    path: folder with `t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz`
      (or the `train-*` pair).
    max_per_digit: keep at most this many images per digit (0: all).
  """
  folder = Path(path)
  for prefix in ("train", "t10k"):
    img, lab = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    if img.is_file() and lab.is_file():
      break
  else:
    raise FileNotFoundError(f"no MNIST IDX image/label pair in {folder}.")
  images, labels = read_idx(img).astype(np.float32) / 255.0, read_idx(lab).astype(np.int64)
  if images.ndim != 3 or len(images) != len(labels):
    raise ValueError(f"MNIST: images {images.shape} and labels {labels.shape} do not match.")
  wanted = _check_labels([int(d) for d in str(digits)], labels)
  ids = np.concatenate([np.flatnonzero(labels == d)[:max_per_digit or None] for d in wanted])
  clouds = standardise(images_to_clouds(images[ids], threshold, jitter, seed))
  return labelled_populations(clouds, labels[ids], test_fraction=test_fraction, seed=seed,
                              info=f"MNIST {digits} from {folder} (pixels > {threshold})")


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
  """Vertices `[V, 3]` and triangles `[F, 3]` (0-based) of a Wavefront OBJ file.

  Polygons are fan-triangulated; texture/normal indices (`v/vt/vn`) and
  negative (relative) indices are handled.
  """
  verts, faces = [], []
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if parts[0] == "v":
        verts.append([float(v) for v in parts[1:4]])
      elif parts[0] == "f":
        idx = [int(p.split("/")[0]) for p in parts[1:]]
        idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
        if len(idx) < 3:
          raise ValueError(f"{path}:{line_no}: face with {len(idx)} vertices.")
        faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
  v, f = np.asarray(verts, np.float64), np.asarray(faces, np.int64)
  if len(v) == 0 or len(f) == 0:
    raise ValueError(f"{path}: no vertices or no faces.")
  if f.min() < 0 or f.max() >= len(v):
    raise ValueError(f"{path}: face index out of range (have {len(v)} vertices).")
  return v, f


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int,
                   rng: np.random.Generator) -> np.ndarray:
  """`[n, 3]` points uniform on the mesh surface (triangles drawn by area)."""
  tri = vertices[faces]  # [F, 3, 3]
  area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
  if not area.sum() > 0:
    raise ValueError("sample_surface: the mesh has zero area.")
  k = rng.choice(len(faces), n, p=area / area.sum())
  u, v = rng.random((2, n))
  flip = u + v > 1  # reflect into the triangle: uniform barycentric coordinates.
  u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
  t = tri[k]
  return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


@DATASETS.register("mesh_clouds")
def mesh_clouds(*, paths: Sequence[str] = (), clouds_per_mesh: int = 64,
                min_points: int = 64, max_points: int = 128, test_fraction: float = 0.25,
                seed: int = 0) -> Populations:
  """Surface samples of OBJ meshes, one label per mesh, sizes uniform in [min, max]."""
  if not paths:
    raise ValueError("mesh_clouds: give at least one OBJ path.")
  if not 1 <= min_points <= max_points:
    raise ValueError(f"mesh_clouds: need 1 <= min_points <= max_points, got "
                     f"{min_points}, {max_points}.")
  rng = np.random.default_rng(seed)
  clouds, labels = [], []
  for p in paths:
    v, f = read_obj(p)
    for _ in range(clouds_per_mesh):
      clouds.append(sample_surface(v, f, int(rng.integers(min_points, max_points + 1)), rng))
      labels.append(Path(p).stem)
  # Standardise each mesh's clouds together (meshes come in unrelated units).
  out = []
  for name in dict.fromkeys(labels):
    out += standardise([c for c, lab in zip(clouds, labels) if lab == name])
  return labelled_populations(out, labels, test_fraction=test_fraction, seed=seed,
                              num_points=max_points, info=f"surface samples of {list(paths)}")

"""Streams CellFlux training batches from a crops TFDS dataset with grain.

CellFlux (Algorithm 1) pairs each perturbed cell x1 with a control cell x0 of
the same plate. This module reads a dataset written by
`flowzoo.data.crops_tfds` by random access, so memory does not grow with the
number of crops:

    pipe = CropsPipeline(path, batch_size=64, seed=0, worker_count=2,
                         process_index=jax.process_index(), process_count=jax.process_count())
    it = pipe.iterator(start_step=0)   # grain iterator: next(it), it.get_state(), it.set_state(s)
    batch = next(it)                   # this process's rows of global step 0
    pipe.batch(step)                   # the same batch, computed directly
    test = load_split(path, "test")    # small in-memory evaluation data

Batch (plain numpy, leading batch axis, flowzoo's `sample_batch` convention),
with b = batch_size // process_count rows per process:
  x1     [b, H, W, C] float32  treated crops in [-1, 1]
  x0     [b, H, W, C] float32  a control crop per row: same plate, or with
                               pairing="other_plates" a different plate
  cond   [b, V + 1]   float32  one-hot compound over `metadata["compounds"]`,
                               then log(1 + dose) (`crops_index.descriptors`)
  group  [b]          int32    condition index (`condition_names`)

Determinism. Global step s holds the treated cells at positions
[s B, (s + 1) B) of an endless sequence of epochs, each a seeded permutation
of the training cells (grain's index shuffle, reshuffled every epoch, O(1)
memory). The control draws and the dihedral augmentation (one of the 8
flips / 90-degree rotations, drawn independently for x1 and x0) come from a
generator seeded by (seed, s). So a batch is a pure function of
(seed, step): process p's rows are [p b, (p + 1) b) of the global batch, the
shards concatenate to the global batch for any process count, and grain
workers (each computes whole batches; grain interleaves them back in order)
give the same batches as worker_count=0.

Resuming. Either checkpoint `it.get_state()` (a small dict) and call
`it.set_state(state)` on a fresh `pipe.iterator()`, or, simpler, start a
fresh iterator at the step the run resumes from: `pipe.iterator(start_step=s)`
yields batches s, s + 1, ... bit-identical to the uninterrupted run.

Normalisation: per channel, clip to the stored training percentiles
(`metadata["normalisation"]`, 0.1 / 99.9 by default) and map them to -1 / 1.

Workers are spawned processes (grain `mp_prefetch`). The per-batch code is
sent to them by value (`cloudpickle.register_pickle_by_value`) and needs
only numpy, grain and tensorflow_datasets, so a worker does not import
flowzoo (and jax) unless the main script does at top level (spawn
re-imports the main module).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

PAIRINGS = ("same_plate", "other_plates")
_MAX_STEPS = 2**40  # "endless": grain datasets need a length
_EXTRA = "flowzoo[images]"


def _import(name: str):
  try:
    return __import__(name)
  except ImportError as e:
    raise ImportError(f"the crops pipeline needs {name}: pip install '{_EXTRA}'.") from e


def normalise(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
  """Clips `[..., C]` to [low, high] per channel and maps that range to [-1, 1] (float32)."""
  x = np.clip(x.astype(np.float32), low, high)
  return ((x - low) * (2.0 / (high - low)) - 1.0).astype(np.float32)


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
  """The k-th of the 8 symmetries of the square on `[H, W, C]`: rot90^(k % 4), then a flip if k >= 4."""
  x = np.rot90(x, k % 4, axes=(0, 1))
  return x[:, ::-1] if k >= 4 else x


class _BatchReader:
  """Computes one process's rows of a global batch; picklable, opens its sources lazily."""

  def __init__(self, *, path, split, seed, batch_size, rows, n_targets, control_ranges,
               pairing, augment, low, high, descriptors):
    self.path, self.split, self.seed = path, split, seed
    self.batch_size, self.rows, self.n_targets = batch_size, rows, n_targets
    self.control_ranges = np.asarray(control_ranges, np.int64)   # [P, 2] start, count
    self.pairing, self.augment = pairing, augment
    self.low = np.asarray(low, np.float32)
    self.high = np.asarray(high, np.float32)
    self.descriptors = np.asarray(descriptors, np.float32)
    self._sources = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_sources"] = None  # file handles stay in the process that opened them
    return state

  def _open(self):
    if self._sources is None:
      tfds, grain = _import("tensorflow_datasets"), _import("grain")
      builder = tfds.builder_from_directory(self.path)
      order = grain.MapDataset.range(self.n_targets).shuffle(seed=self.seed).repeat()
      self._sources = (builder.as_data_source(split=self.split),
                       builder.as_data_source(split=f"control_{self.split}"), order)
    return self._sources

  def indices(self, step: int) -> dict[str, np.ndarray]:
    """Record indices of this process's rows of global step `step`, and the random draws."""
    _, _, order = self._open()
    lo, hi = self.rows
    positions = step * self.batch_size + np.arange(lo, hi)
    target = np.array([order[int(i)] for i in positions], np.int64)
    rng = np.random.default_rng([self.seed, step])
    # Drawn for the whole global batch, then sliced: a row's draws do not
    # depend on the process count.
    u = rng.random(self.batch_size)[lo:hi]
    k1 = rng.integers(0, 8, self.batch_size)[lo:hi]
    k0 = rng.integers(0, 8, self.batch_size)[lo:hi]
    return {"target": target, "u": u, "k1": k1, "k0": k0}

  def _pair(self, u: np.ndarray, plates: np.ndarray) -> np.ndarray:
    start, count = self.control_ranges[plates, 0], self.control_ranges[plates, 1]
    if self.pairing == "same_plate":
      return start + np.floor(u * count).astype(np.int64)
    # Uniform over the controls outside the row's own plate block.
    j = np.floor(u * (self.control_ranges[:, 1].sum() - count)).astype(np.int64)
    return np.where(j >= start, j + count, j)

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    targets, controls, _ = self._open()
    ids = self.indices(step)
    recs = targets.__getitems__(ids["target"].tolist())
    plates = np.array([r["plate"] for r in recs], np.int64)
    group = np.array([r["condition"] for r in recs], np.int32)
    source = self._pair(ids["u"], plates)
    crecs = controls.__getitems__(source.tolist())
    x1 = normalise(np.stack([r["image"] for r in recs]), self.low, self.high)
    x0 = normalise(np.stack([r["image"] for r in crecs]), self.low, self.high)
    if self.augment:
      x1 = np.stack([dihedral(x, k) for x, k in zip(x1, ids["k1"])])
      x0 = np.stack([dihedral(x, k) for x, k in zip(x0, ids["k0"])])
    return {"x1": np.ascontiguousarray(x1), "x0": np.ascontiguousarray(x0),
            "cond": self.descriptors[group], "group": group}


class CropsPipeline:
  """Training batches of a crops dataset (module docstring).

  Args:
    path: the dataset folder returned by `build_crops_dataset`.
    batch_size: the GLOBAL batch size B; each process gets B / process_count rows.
    seed: shuffling, pairing and augmentation seed, in [0, 2**32).
    split: the treated split to stream; its controls are `control_<split>`.
    pairing: "same_plate" (CellFlux) or "other_plates" (the batch-effect ablation).
    augment: random flips / 90-degree rotations, independent for x1 and x0.
    process_index, process_count: this process's shard of the global batch.
    worker_count: grain worker processes (0: in this process).
    worker_buffer_size: batches each worker prepares ahead.
  """

  def __init__(self, path: str | Path, *, batch_size: int, seed: int = 0, split: str = "train",
               pairing: str = "same_plate", augment: bool = True, process_index: int = 0,
               process_count: int = 1, worker_count: int = 0, worker_buffer_size: int = 2):
    from flowzoo.data import crops_index, crops_tfds  # pylint: disable=import-outside-toplevel
    if pairing not in PAIRINGS:
      raise ValueError(f"unknown pairing {pairing!r}; valid: {PAIRINGS}.")
    if not 0 <= seed < 2**32:
      raise ValueError(f"seed must be in [0, 2**32), got {seed}.")
    if batch_size < 1 or batch_size % process_count:
      raise ValueError(f"batch_size={batch_size} must be a positive multiple of "
                       f"process_count={process_count}.")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} not in [0, {process_count}).")
    if worker_count < 0:
      raise ValueError(f"worker_count must be >= 0, got {worker_count}.")
    self.path = Path(path)
    self.metadata: dict[str, Any] = crops_tfds.read_metadata(self.path)
    meta = self.metadata
    control_split = f"control_{split}"
    if meta["splits"].get(split, 0) == 0 or control_split not in meta["control_plate_ranges"]:
      raise ValueError(f"{self.path}: no treated cells or no controls in split {split!r}; "
                       f"splits: {meta['splits']}.")
    self._check_pairing(meta, split, control_split, pairing)
    self.condition_names: tuple[str, ...] = tuple(meta["conditions"])
    self.descriptors = crops_index.descriptors(meta["condition_compounds"],
                                               meta["condition_doses"], meta["compounds"])
    self.image_shape = tuple(meta["image_shape"])
    self.worker_count, self.worker_buffer_size = worker_count, worker_buffer_size
    local = batch_size // process_count
    norm = meta["normalisation"]
    self._reader = _BatchReader(
        path=str(self.path), split=split, seed=seed, batch_size=batch_size,
        rows=(process_index * local, (process_index + 1) * local), n_targets=meta["splits"][split],
        control_ranges=meta["control_plate_ranges"][control_split], pairing=pairing,
        augment=augment, low=norm["low"], high=norm["high"], descriptors=self.descriptors)

  @staticmethod
  def _check_pairing(meta, split, control_split, pairing) -> None:
    treated = np.asarray(meta["plate_counts"][split])
    controls = np.asarray(meta["plate_counts"][control_split])
    plates = meta["plates"]
    for p in np.flatnonzero(treated):
      if pairing == "same_plate" and controls[p] == 0:
        raise ValueError(f"plate {plates[p]!r} has treated {split!r} cells but no "
                         f"{control_split!r} controls to pair them with.")
      if pairing == "other_plates" and controls.sum() == controls[p]:
        raise ValueError(
            f"pairing='other_plates' needs controls from 2+ plates, but every {control_split!r} "
            f"control of treated plate {plates[p]!r} comes from that plate "
            f"(plates with controls: {[plates[i] for i in np.flatnonzero(controls)]}).")

  @property
  def cond_dim(self) -> int:
    return int(self.descriptors.shape[1])

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's rows of global step `step` (the iterator yields the same)."""
    return self._reader(step)

  def indices(self, step: int) -> dict[str, np.ndarray]:
    """Target record indices `[b]` (in the split) and source indices `[b]` (in control_<split>)."""
    targets, _, _ = self._reader._open()  # pylint: disable=protected-access
    ids = self._reader.indices(step)
    plates = np.array([r["plate"] for r in targets.__getitems__(ids["target"].tolist())])
    return {"target": ids["target"],
            "source": self._reader._pair(ids["u"], plates)}  # pylint: disable=protected-access

  def dataset(self, start_step: int = 0, num_steps: int | None = None):
    """A grain `IterDataset` of batches `start_step, start_step + 1, ...` (endless by default)."""
    grain = _import("grain")
    stop = start_step + num_steps if num_steps is not None else _MAX_STEPS
    ds = grain.MapDataset.range(start_step, stop).map(self._reader)
    # One batch read ahead in this process; a larger buffer only holds more batches.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    if self.worker_count:
      # Spawned workers unpickle the reader; by value, they need not import flowzoo.
      import cloudpickle  # pylint: disable=import-outside-toplevel  (a grain dependency)
      from absl import flags  # pylint: disable=import-outside-toplevel
      cloudpickle.register_pickle_by_value(sys.modules[__name__])
      # grain 0.2.18 reads an absl flag when it starts workers in a process
      # that imported jax, and fails if flags were never parsed (outside an
      # absl app: scripts, pytest). google/grain#1355, fixed upstream in
      # #1362; absl apps (experiments.run) have parsed them already.
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.worker_count, per_worker_buffer_size=self.worker_buffer_size))
    return ds

  def iterator(self, start_step: int = 0, num_steps: int | None = None):
    """A grain iterator over `dataset(...)`; checkpoint with `get_state()` / `set_state()`."""
    return iter(self.dataset(start_step, num_steps))


def load_split(path: str | Path, split: str = "test", *, chunk: int = 256) -> dict[str, Any]:
  """A whole (small) split in memory, normalised, for evaluation.

  Returns:
    dict with
      `x1`: condition name -> `[n, H, W, C]` float32 treated crops of `split`;
      `x1_plates`: condition name -> `[n]` plate names of those crops;
      `x0`: plate name -> `[m, H, W, C]` float32 controls of `control_<split>`
        (held-out controls: the "control as prediction" baseline);
      `cond`: condition name -> `[V + 1]` descriptor; `group`: name -> index.
  """
  from flowzoo.data import crops_index, crops_tfds  # pylint: disable=import-outside-toplevel
  builder = crops_tfds.open_builder(path)
  meta = dict(builder.info.metadata)
  if split not in meta["splits"]:
    raise ValueError(f"{path}: no split {split!r}; splits: {sorted(meta['splits'])}.")
  low = np.asarray(meta["normalisation"]["low"], np.float32)
  high = np.asarray(meta["normalisation"]["high"], np.float32)
  names, plates = meta["conditions"], meta["plates"]
  desc = crops_index.descriptors(meta["condition_compounds"], meta["condition_doses"],
                                 meta["compounds"])

  def read(s):
    src = builder.as_data_source(split=s)
    images, plate, cond = [], [], []
    for i in range(0, len(src), chunk):
      recs = src.__getitems__(list(range(i, min(i + chunk, len(src)))))
      images.append(normalise(np.stack([r["image"] for r in recs]), low, high))
      plate += [r["plate"] for r in recs]
      cond += [r["condition"] for r in recs]
    return np.concatenate(images), np.asarray(plate), np.asarray(cond)

  x1, p1, c1 = read(split)
  out = {"x1": {}, "x1_plates": {}, "x0": {}, "cond": {}, "group": {}}
  for k in np.unique(c1):
    out["x1"][names[k]] = x1[c1 == k]
    out["x1_plates"][names[k]] = np.asarray(plates, dtype=object)[p1[c1 == k]].astype(str)
    out["cond"][names[k]] = desc[k]
    out["group"][names[k]] = int(k)
  if f"control_{split}" in meta["splits"]:
    x0, p0, _ = read(f"control_{split}")
    for p in np.unique(p0):
      out["x0"][plates[p]] = x0[p0 == p]
  return out

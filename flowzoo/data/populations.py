"""Population datasets: conditions, each a set of samples with a descriptor.

The unit of data in every flowzoo method is a *population* rho_n (MixFlow §2):
the samples observed under one condition n, with a descriptor y_n (e.g. a
one-hot letter and a rotation, a compound fingerprint), covariates (plate,
cell type, ...) and a split label. Optional per-condition *source* samples
(control cells of the same plate) feed the empirical base used by CellFlux and
PRiMeFlow.

`Populations` validates on construction, so bad data fails here, before any
compilation. `pack` turns it into device arrays from which `sample_batch`
draws minibatches inside jit.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

SPLITS = ("train", "validation", "heldout")
# How a row's source sample is drawn from its condition's `sources`
# (`source_index`): from all of them, from those of the row's own plate
# (CellFlux's batch-matched pairing), or from those of the other plates
# (CellFlux Table 2d: the batch-effect ablation).
PAIRINGS = ("pooled", "same_plate", "other_plates")

# Largest |x| whose square is a finite float32 (~1.8e19). Squared distances
# (OT costs, W2, MMD kernels) of larger values are inf: a finite but huge
# feature used to fail mid-training in the OT solver ("cost matrix is
# infeasible").
MAX_ABS_VALUE = float(np.sqrt(np.finfo(np.float32).max))


@dataclasses.dataclass(frozen=True)
class Populations:
  """Conditions with samples, descriptors, covariates and split labels.

  Attributes:
    names: condition names, length K.
    samples: K arrays, each `[n_k, *event_shape]` (n_k may differ).
    descriptors: `[K, C]` descriptor y_n per condition.
    splits: K labels, each one of `SPLITS`.
    covariates: name -> K labels (plate, cell type, ...), for grouping.
    sources: optional K arrays `[m_k, *event_shape]` of source samples
      (e.g. control cells of the same plate) for an empirical base.
    masks: optional K bool arrays `[n_k, N]` marking the real points of
      padded point clouds (`event_shape = (N, D)`); padded points must be 0.
    info: free-form description printed by runs (e.g. "simulated").
    sample_plates, source_plates: optional K arrays `[n_k]` / `[m_k]` of the
      plate (batch) label of every sample / source sample; needed by a
      `pairing` other than "pooled". Sources are stored sorted by plate.
    pairing: one of `PAIRINGS`.
    titles: optional K human-readable titles for plots and progress lines,
      saying what each condition is (letters: "S, 54°"); None: the names.
  """

  names: Sequence[str]
  samples: Sequence[np.ndarray]
  descriptors: np.ndarray
  splits: Sequence[str]
  covariates: Mapping[str, Sequence] = dataclasses.field(default_factory=dict)
  sources: Sequence[np.ndarray] | None = None
  info: str = ""
  masks: Sequence[np.ndarray] | None = None
  sample_plates: Sequence[np.ndarray] | None = None
  source_plates: Sequence[np.ndarray] | None = None
  pairing: str = "pooled"
  titles: Sequence[str] | None = None

  def __post_init__(self):
    k = len(self.names)
    if k == 0:
      raise ValueError("Populations: no conditions.")
    if len(set(self.names)) != k:
      raise ValueError("Populations: condition names are not unique.")
    object.__setattr__(self, "samples", [np.asarray(s, np.float32) for s in self.samples])
    object.__setattr__(self, "descriptors", np.asarray(self.descriptors, np.float32))
    if len(self.samples) != k or len(self.splits) != k:
      raise ValueError(
          f"Populations: {k} names but {len(self.samples)} sample arrays and "
          f"{len(self.splits)} split labels.")
    if self.descriptors.ndim != 2 or self.descriptors.shape[0] != k:
      raise ValueError(
          f"Populations: descriptors must be [K={k}, C], got {self.descriptors.shape}.")
    _check_finite("descriptors", self.descriptors)
    shape = self.samples[0].shape[1:]
    for name, s in zip(self.names, self.samples):
      if s.shape[0] == 0:
        raise ValueError(f"Populations: condition {name!r} has no samples.")
      if s.shape[1:] != shape:
        raise ValueError(
            f"Populations: condition {name!r} has samples of shape {s.shape[1:]}, "
            f"expected {shape} like {self.names[0]!r}.")
      _check_finite(f"samples of condition {name!r}", s)
      _check_magnitude(f"samples of condition {name!r}", s)
    bad = sorted({s for s in self.splits if s not in SPLITS})
    if bad:
      raise ValueError(f"Populations: unknown split label(s) {bad}; valid: {SPLITS}.")
    if self.titles is not None and len(self.titles) != k:
      raise ValueError(f"Populations: {len(self.titles)} titles for {k} conditions.")
    for cov, labels in self.covariates.items():
      if len(labels) != k:
        raise ValueError(f"Populations: covariate {cov!r} has {len(labels)} labels, expected {k}.")
    if self.sources is not None:
      object.__setattr__(self, "sources", [np.asarray(s, np.float32) for s in self.sources])
      if len(self.sources) != k:
        raise ValueError(f"Populations: {len(self.sources)} source arrays for {k} conditions.")
      for name, s in zip(self.names, self.sources):
        if s.shape[0] == 0 or s.shape[1:] != shape:
          raise ValueError(
              f"Populations: source samples of {name!r} have shape {s.shape}; "
              f"need at least one sample of shape {shape}.")
        _check_finite(f"source samples of condition {name!r}", s)
        _check_magnitude(f"source samples of condition {name!r}", s)
    self._check_pairing()

    if self.masks is not None:
      object.__setattr__(self, "masks", [np.asarray(m, bool) for m in self.masks])
      for name, s, m in zip(self.names, self.samples, self.masks):
        if m.shape != s.shape[:2]:
          raise ValueError(f"Populations: mask of {name!r} has shape {m.shape}, "
                           f"expected {s.shape[:2]} (samples are {s.shape}).")
        empty = np.flatnonzero(~m.any(axis=1))
        if empty.size:
          raise ValueError(f"Populations: condition {name!r} has {empty.size} empty point "
                           f"cloud(s) (all points masked), e.g. sample {empty[0]}.")

  def _check_pairing(self) -> None:
    if self.pairing not in PAIRINGS:
      raise ValueError(f"Populations: unknown pairing {self.pairing!r}; valid: {PAIRINGS}.")
    if self.pairing == "pooled":
      return
    if self.sources is None or self.sample_plates is None or self.source_plates is None:
      raise ValueError(f"Populations: pairing {self.pairing!r} needs sources, sample_plates and "
                       "source_plates (the plate of every sample and source sample).")
    if not len(self.sample_plates) == len(self.source_plates) == len(self.names):
      raise ValueError(f"Populations: {len(self.names)} conditions but {len(self.sample_plates)} "
                       f"sample_plates and {len(self.source_plates)} source_plates arrays.")
    sample_plates = [np.asarray(p).astype(str) for p in self.sample_plates]
    source_plates, sources = [], []
    for name, s, x, sp, tp in zip(self.names, self.samples, self.sources, self.source_plates,
                                  sample_plates):
      sp = np.asarray(sp).astype(str)
      if len(tp) != len(s) or len(sp) != len(x):
        raise ValueError(f"Populations: condition {name!r} has {len(s)} samples / {len(x)} "
                         f"sources but {len(tp)} / {len(sp)} plate labels.")
      order = np.argsort(sp, kind="stable")  # one contiguous block per plate
      source_plates.append(sp[order])
      sources.append(x[order])
      for plate in map(str, np.unique(tp)):
        own = int(np.sum(sp == plate))
        if self.pairing == "same_plate" and own == 0:
          raise ValueError(
              f"Populations: plate {plate!r} of condition {name!r} has no control (source) "
              "samples, so same-plate pairing cannot draw one; use pairing='pooled' or "
              "drop the plate.")
        if self.pairing == "other_plates" and own == len(sp):
          raise ValueError(
              f"Populations: condition {name!r} has source samples from plate {plate!r} only; "
              "other-plate pairing needs control samples from 2+ plates.")
    object.__setattr__(self, "sample_plates", sample_plates)
    object.__setattr__(self, "source_plates", source_plates)
    object.__setattr__(self, "sources", sources)

  def plate_ranges(self, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`(lo [n_k], cnt [n_k])`: where each sample's own plate sits in `sources[k]`."""
    if self.pairing == "pooled":
      n = len(self.samples[k])
      return np.zeros(n, np.int32), np.zeros(n, np.int32)
    sp, tp = self.source_plates[k], self.sample_plates[k]
    lo = np.searchsorted(sp, tp, "left")
    return lo.astype(np.int32), (np.searchsorted(sp, tp, "right") - lo).astype(np.int32)

  @property
  def event_shape(self) -> tuple[int, ...]:
    return tuple(self.samples[0].shape[1:])

  @property
  def cond_dim(self) -> int:
    return int(self.descriptors.shape[1])

  def split_ids(self, split: str) -> np.ndarray:
    """Indices of the conditions in `split`; raises if it has none."""
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r}; valid: {SPLITS}.")
    ids = np.flatnonzero(np.asarray(self.splits) == split)
    if ids.size == 0:
      raise ValueError(f"Split {split!r} has no conditions.")
    return ids

  def title(self, k: int) -> str:
    """What condition `k` is, for a plot or a progress line (its name if untitled)."""
    return self.names[k] if self.titles is None else self.titles[k]

  def has_split(self, split: str) -> bool:
    return split in set(self.splits)


def _check_finite(what: str, a: np.ndarray) -> None:
  if not np.all(np.isfinite(a)):
    bad = int(np.size(a) - np.isfinite(a).sum())
    raise ValueError(f"{what} contain {bad} NaN/inf value(s).")


def _check_magnitude(what: str, a: np.ndarray) -> None:
  big = np.abs(a) > MAX_ABS_VALUE
  if big.any():
    raise ValueError(
        f"{what} contain {int(big.sum())} value(s) with |x| > {MAX_ABS_VALUE:.3g} (largest "
        f"{float(np.abs(a).max()):.3g}): their squares overflow float32, so squared distances "
        f"and OT costs become inf. Rescale or standardise the data.")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Packed:
  """Device-resident `Populations` for in-jit minibatch sampling.

  Attributes:
    x: `[N_total, *event]` all samples, conditions concatenated.
    offsets, counts: `[K]` where condition k lives in `x`.
    descriptors: `[K, C]`.
    src, src_offsets, src_counts: the same for source samples (or a dummy
      one-row array with zero counts when the dataset has none).
    plate_lo, plate_cnt: `[N_total]` where each sample's own plate sits in its
      condition's sources (`Populations.plate_ranges`).
  """

  x: jax.Array
  offsets: jax.Array
  counts: jax.Array
  descriptors: jax.Array
  src: jax.Array
  src_offsets: jax.Array
  src_counts: jax.Array
  plate_lo: jax.Array | None = None
  plate_cnt: jax.Array | None = None
  mask: jax.Array | None = None
  has_sources: bool = dataclasses.field(default=False, metadata=dict(static=True))
  pairing: str = dataclasses.field(default="pooled", metadata=dict(static=True))


def _concat(arrays: Sequence[np.ndarray]):
  counts = np.array([a.shape[0] for a in arrays], np.int32)
  offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
  return np.concatenate(arrays, 0), offsets, counts


def pack(pops: Populations) -> Packed:
  """Moves a validated `Populations` to device arrays."""
  x, offsets, counts = _concat(pops.samples)
  if pops.sources is not None:
    src, src_offsets, src_counts = _concat(pops.sources)
  else:
    src = np.zeros((1, *pops.event_shape), np.float32)
    src_offsets = np.zeros_like(offsets)
    src_counts = np.zeros_like(counts)
  mask = None if pops.masks is None else jnp.asarray(np.concatenate(pops.masks, 0))
  ranges = [pops.plate_ranges(k) for k in range(len(pops.names))]
  return Packed(*(jnp.asarray(a) for a in (
      x, offsets, counts, pops.descriptors, src, src_offsets, src_counts)),
                plate_lo=jnp.asarray(np.concatenate([r[0] for r in ranges])),
                plate_cnt=jnp.asarray(np.concatenate([r[1] for r in ranges])),
                mask=mask, has_sources=pops.sources is not None, pairing=pops.pairing)


def source_index(u, offset, count, plate_lo, plate_cnt, pairing: str, xp=jnp):
  """Index into the concatenated sources of one source draw per row, for `pairing`.

  Args:
    u: `[B]` uniforms in [0, 1).
    offset, count: `[B]` where the row's condition's sources are.
    plate_lo, plate_cnt: `[B]` the row's own plate within them.
    xp: `jnp` inside jit, `np` for generation on the host (same draws).
  """
  if pairing == "same_plate":
    return offset + plate_lo + xp.floor(u * plate_cnt).astype(xp.int32)
  if pairing == "other_plates":
    # Uniform over the condition's sources with the own plate's block cut out.
    r = xp.floor(u * (count - plate_cnt)).astype(xp.int32)
    return offset + r + xp.where(r >= plate_lo, plate_cnt, 0)
  return offset + xp.floor(u * count).astype(xp.int32)


def sample_batch(packed: Packed, rng: jax.Array, condition_ids: jax.Array, *,
                 batch_size: int, populations_per_batch: int) -> dict[str, jax.Array]:
  """Draws a minibatch inside jit.

  `populations_per_batch` P conditions are drawn uniformly from
  `condition_ids` and `batch_size // P` samples (with replacement) from each,
  laid out contiguously: MixFlow Algorithm 1, lines 7-9 when P = 1. P equal to
  `batch_size` gives a batch mixed across conditions.

  Returns:
    dict with `x1` `[B, *event]` targets, `cond` `[B, C]` descriptors,
    `group` `[B]` condition index (couplings may restrict pairs to a group),
    `x0` `[B, *event]` source samples of the same condition (and, with
    same-plate pairing, of each target row's plate) when the dataset has
    sources, and `mask1` `[B, N]` for padded point clouds.
  """
  if batch_size % populations_per_batch:
    raise ValueError(
        f"batch_size={batch_size} is not a multiple of "
        f"populations_per_batch={populations_per_batch}.")
  per = batch_size // populations_per_batch
  k_rng, s_rng, c_rng = jax.random.split(rng, 3)
  conds = jax.random.choice(k_rng, condition_ids, (populations_per_batch,))
  group = jnp.repeat(conds, per)
  u = jax.random.uniform(s_rng, (batch_size,))
  idx = packed.offsets[group] + jnp.floor(u * packed.counts[group]).astype(jnp.int32)
  batch = {"x1": packed.x[idx], "cond": packed.descriptors[group], "group": group}
  if packed.mask is not None:
    batch["mask1"] = packed.mask[idx]
  if packed.has_sources:
    u0 = jax.random.uniform(c_rng, (batch_size,))
    idx0 = source_index(u0, packed.src_offsets[group], packed.src_counts[group],
                        packed.plate_lo[idx], packed.plate_cnt[idx], packed.pairing)
    batch["x0"] = packed.src[idx0]
  return batch

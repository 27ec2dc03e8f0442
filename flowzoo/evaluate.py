"""Evaluation: generate every condition of every split and compare with the data.

Per condition, as many samples are generated as the real population holds,
each metric in `flowzoo.metrics` is computed against the real samples, and
per-condition values plus split means are returned (and written to
`eval.json` by the experiment).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flowzoo import metrics as metrics_lib
from flowzoo.data.populations import Populations, source_index


def condition_batch(pops: Populations, ids: Sequence[int], counts: Sequence[int],
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Rows for generating `counts[i]` samples of condition `ids[i]`.

  Returns:
    `cond` `[N, C]`, `group` `[N]` and, with sources, `x0` `[N, *event]`
    drawn (with replacement) from each condition's source samples; with
    same-/other-plate pairing each row takes the plate of a real sample of
    its condition drawn at random (so plates weigh as in the real data).
  """
  group = np.repeat(np.asarray(ids, np.int32), counts)
  batch = {"cond": pops.descriptors[group], "group": group}
  if pops.masks is not None:
    # Generated point clouds take the sizes of the real ones, in order.
    batch["mask1"] = np.concatenate([
        pops.masks[k][np.arange(n) % len(pops.masks[k])] for k, n in zip(ids, counts)])
  if pops.sources is not None and pops.pairing == "pooled":
    batch["x0"] = np.concatenate([
        pops.sources[k][rng.integers(0, len(pops.sources[k]), n)] for k, n in zip(ids, counts)])
  elif pops.sources is not None:
    x0 = []
    for k, n in zip(ids, counts):
      lo, cnt = pops.plate_ranges(k)
      row = rng.integers(0, len(lo), n)
      idx = source_index(rng.random(n), 0, len(pops.sources[k]), lo[row], cnt[row],
                         pops.pairing, xp=np)
      x0.append(pops.sources[k][idx])
    batch["x0"] = np.concatenate(x0)
  return batch


class Generator:
  """Generates in fixed-size chunks so one compiled program serves all conditions."""

  def __init__(self, method, *, solver: str, num_steps: int, guidance: float,
               chunk: int = 1024, unroll: bool = False):
    self.chunk = chunk
    # `unroll` (conv nets on CPU, `flowzoo.sampling.integrate`) is passed only when
    # set: the point-cloud and Bures methods integrate by their own `generate`.
    kw = dict(solver=solver, num_steps=num_steps, guidance=guidance,
              **({"unroll": True} if unroll else {}))
    self._gen = jax.jit(functools.partial(method.generate, **kw))
    self._traj = jax.jit(functools.partial(method.generate, save_at=(0.0, 0.5, 1.0), **kw))

  def _run(self, fn, params, rng, batch, axis: int) -> np.ndarray:
    """Applies `fn` chunk by chunk (last chunk padded) and concatenates on `axis`."""
    n = len(batch["cond"])
    pad = -n % self.chunk
    padded = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k, v in batch.items()}
    outs = []
    for i, s in enumerate(range(0, n + pad, self.chunk)):
      rows = {k: jnp.asarray(v[s:s + self.chunk]) for k, v in padded.items()}
      outs.append(jax.device_get(fn(params, jax.random.fold_in(rng, i), rows)))
    return np.take(np.concatenate(outs, axis=axis), np.arange(n), axis=axis)

  def __call__(self, params, rng, batch) -> np.ndarray:
    """`[N, *event]` samples at t = 1 for the rows of `batch`."""
    return self._run(self._gen, params, rng, batch, axis=0)

  def trajectory(self, params, rng, batch) -> np.ndarray:
    """`[3, N, *event]` samples at t = 0, 0.5, 1."""
    return self._run(lambda *a: self._traj(*a)[1], params, rng, batch, axis=1)


def check_samples_per_condition(n: int) -> None:
  """Raises ValueError unless `n` >= 0 (0 = as many as the real population)."""
  if n < 0:
    raise ValueError(f"eval.samples_per_condition must be >= 0 (0 = as many as the real "
                     f"population), got {n}.")


def valid_metrics(method) -> list[str]:
  """Metric names `evaluate` accepts for `method`: `metrics.METRICS` plus `method.metrics()`."""
  return sorted(set(metrics_lib.METRICS) | set(method.metrics()))


def evaluate(method, params, pops: Populations, rng: jax.Array, *,
             splits: Sequence[str], solver: str = "euler", num_steps: int = 32,
             guidance: float = 1.0, metric_names: Sequence[str] = ("w1", "w2", "mmd", "energy"),
             max_samples: int = 2000, samples_per_condition: int = 0, chunk: int = 1024,
             seed: int = 0, generator: Generator | None = None, console=None):
  """Generates every condition of `splits` and scores it.

  Args:
    method, params: a trained method and the (EMA) parameters to sample with.
    pops: the dataset.
    splits: split names to evaluate; splits absent from the data are skipped.
    max_samples: metrics use at most this many real and generated samples per
      condition (exact OT is cubic in the sample count).
    samples_per_condition: samples generated per condition; 0 = as many as
      the real population. A fixed count matters when populations are tiny
      (a family of 16 Gaussians is ONE population of 16: a 16-sample
      estimate of WFM Table 2's min-W2^2 is mostly noise).
    generator: a `Generator` of `method` to reuse (its compiled program): one
      made with `solver`, `num_steps`, `guidance` and `chunk`. None: a new one
      (compiled on first use).
    console: a `flowzoo.progress.Console` for progress lines (generating a
      split, conditions scored); None prints nothing.
  Returns:
    `(results, samples)`: results[metric][split] = {"mean", "per_condition":
    {name: value}}; samples[f"{split}/{name}"] = `[n, *event]` generated.
  """
  check_samples_per_condition(samples_per_condition)
  structured = method.metrics()  # state-space metrics: fn(fake, real, fake_mask, real_mask)
  unknown = sorted(set(metric_names) - set(valid_metrics(method)))
  if unknown:
    raise KeyError(f"Unknown metric(s) {unknown}; valid: {valid_metrics(method)}.")
  gen = generator or Generator(method, solver=solver, num_steps=num_steps, guidance=guidance,
                               chunk=chunk)
  np_rng = np.random.default_rng(seed)
  results = {m: {} for m in metric_names}
  samples = {}
  for s_i, split in enumerate(splits):
    if not pops.has_split(split):
      continue
    ids = pops.split_ids(split)
    counts = [samples_per_condition or len(pops.samples[k]) for k in ids]
    rows = condition_batch(pops, ids, counts, np_rng)
    if console is not None:
      console.say(f"evaluating {split}: generating {sum(counts)} samples of {len(ids)} "
                  f"conditions ({num_steps} {solver} steps)...")
    x = gen(params, jax.random.fold_in(rng, s_i), rows)
    scored = console.counter(f"scored {split} conditions ({', '.join(metric_names)})",
                             len(ids)) if console is not None else None
    per = {m: {} for m in metric_names}
    offsets = np.cumsum([0, *counts])
    for k, lo, hi in zip(ids, offsets[:-1], offsets[1:]):
      name = pops.names[k]
      samples[f"{split}/{name}"] = x[lo:hi]
      real_i = _subsample_idx(len(pops.samples[k]), max_samples, np_rng)
      fake_i = _subsample_idx(hi - lo, max_samples, np_rng)
      masks = (None, None) if pops.masks is None else (
          rows["mask1"][lo:hi][fake_i], pops.masks[k][real_i])
      vals = score_condition(x[lo:hi][fake_i], pops.samples[k][real_i], metric_names,
                             structured, fake_mask=masks[0], real_mask=masks[1])
      for m in metric_names:
        per[m][name] = vals[m]
      if scored is not None:
        scored.tick(pops.title(k))
    for m in metric_names:
      results[m][split] = {"mean": float(np.mean(list(per[m].values()))),
                           "per_condition": per[m]}
  return results, samples


def score_condition(fake, real, metric_names: Sequence[str], structured: dict, *,
                    fake_mask=None, real_mask=None) -> dict[str, float]:
  """Scores one condition's generated `fake` `[n, *event]` against `real` `[N, *event]`.

  `structured` (`method.metrics()`) maps state-space metric names to
  `fn(fake, real, fake_mask, real_mask)`; the other names are
  `flowzoo.metrics` vector metrics of the flattened samples.
  """
  vector = [m for m in metric_names if m not in structured]
  fake, real = np.asarray(fake), np.asarray(real)
  vals = metrics_lib.compute_all(fake.reshape(len(fake), -1), real.reshape(len(real), -1),
                                 names=vector) if vector else {}
  for m in metric_names:
    if m in structured:
      vals[m] = structured[m](fake, real, fake_mask=fake_mask, real_mask=real_mask)
  return {m: float(vals[m]) for m in metric_names}


def subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  """At most `n` rows of `x`, drawn without replacement, kept in order (as `evaluate` does)."""
  return x[_subsample_idx(len(x), n, rng)]


def _subsample_idx(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
  return np.arange(size) if size <= n else np.sort(rng.choice(size, n, replace=False))


def results_table(results: dict) -> str:
  """A small text table: rows = splits, columns = metric means."""
  names = list(results)
  splits = sorted({s for m in names for s in results[m]},
                  key=lambda s: ("train", "validation", "heldout").index(s)
                  if s in ("train", "validation", "heldout") else 9)
  widths = [max(12, len(m) + 2) for m in names]  # long metric names keep a gap
  lines = [f"{'split':<12}" + "".join(f"{m:>{w}}" for m, w in zip(names, widths))]
  for s in splits:
    lines.append(f"{s:<12}" + "".join(
        f"{results[m][s]['mean']:>{w}.4g}" if s in results[m] else f"{'-':>{w}}"
        for m, w in zip(names, widths)))
  return "\n".join(lines)

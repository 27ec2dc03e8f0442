"""Evaluation of image runs (`crops` datasets): CellFlux's image metrics and trivial baselines.

CellFlux (§4.1, Tables 1-2) scores generated single-cell crops by FID over
all held-out cells (FID_o), FID per condition averaged (FID_c), KID, and
MoA classification accuracy of a classifier trained on real crops. Offline
there is no Inception network, so the features are `flowzoo.morphology`'s
(CellProfiler-lite: shape, intensity, texture), standardised on the real
cells (`flowzoo.metrics_images`). Any other encoder `[N, H, W, C] -> [N, F]`
plugs in through `features=` of `score` and `evaluate`. Metrics in
`eval.json` (`results[metric][split] = {"mean", "per_condition"}`):

* `fid_o`, `kid_o`: all generated vs all real cells of the split;
* `fid_c`, `kid_c`: per condition (values in `per_condition`), averaged;
* `accuracy`: a logistic regression on standardised features, trained on
  real training cells with the control as one more class, predicts each
  generated cell's condition (per condition: the fraction right).

Trivial baselines scored the same way (`add_baselines`, in every table):
`control` (held-out control cells of the row's plate as the prediction),
`pooled` (training cells of all conditions pooled), and `train_cells` (real
training cells of the same condition: the floor that finite samples and
features allow; CellFlux's tables list real images likewise).

This module is also the `crops` family of `flowzoo.domain_eval`.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from flowzoo import evaluate as eval_lib

NAME = "crops"
METRICS = ("fid_o", "fid_c", "kid_o", "kid_c", "accuracy")
HIGHER = ("accuracy",)
KINDS = {"control": "held-out control cells of the row's plate as the prediction",
         "pooled": "training cells of all conditions, pooled",
         "train_cells": "real training cells of the same condition (sampling floor)"}
CONTROL_LABEL = "control"
# KID on small per-condition sets: subsets as large as the sets, 50 of them.
KID = dict(kid_subset_size=1000, kid_num_subsets=50)
TRAJECTORY_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
# Shown on results pages below the table (`flowzoo.report.results_page`).
PAGE_FIGURES = ("heldout_real_vs_generated.png", "heldout_trajectories.png")


def _metrics_images():
  """`flowzoo.metrics_images`, imported when scoring: scikit-image is in the `images` extra,
  and `flowzoo.domain_eval` imports this module in every run."""
  try:
    from flowzoo import metrics_images  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"image metrics need scikit-image: pip install 'flowzoo[images]' ({e}).") from e
  return metrics_images


def applies(config) -> bool:
  """True for streamed crop datasets."""
  return config["dataset"]["name"] == NAME


def comparable(a, b) -> bool:
  """Runs of `a` and `b` are scored on the same cells (the same dataset section)."""
  return a["dataset"].to_dict() == b["dataset"].to_dict()


def score_run(config, pops, samples, splits) -> dict:
  """None: image runs are scored by `evaluate` (the `domain_eval` interface)."""
  del config, pops, samples, splits
  return {}


class Reference:
  """The real cells a split is scored against, featurised once.

  Args:
    data: a `flowzoo.data.crops.Crops`.
    split: "train" or "heldout".
    max_cells: at most this many real cells per condition (seeded subsample).
    features: "morphology" or an encoder `[N, H, W, C] -> [N, F]`.

  The training split (classifier, pooled baseline) is read whole before
  `max_cells` per condition are kept: fine for thousands of crops; a screen of
  100k crops needs a subsampling reader here (not written yet).
  """

  def __init__(self, data, split: str, *, max_cells: int, seed: int = 0,
               features: str | Callable = "morphology"):
    rng = np.random.default_rng(seed)
    self.split, self.features = split, features
    real = data.split(split)
    self.names = sorted(real["x1"], key=lambda n: real["group"][n])
    keep = {n: np.sort(rng.permutation(len(real["x1"][n]))[:max_cells]) for n in self.names}
    self.cells = {n: real["x1"][n][keep[n]] for n in self.names}
    self.plates = {n: real["x1_plates"][n][keep[n]] for n in self.names}
    self.controls, self.cond, self.group = real["x0"], real["cond"], real["group"]
    train = real if split == "train" else data.split("train")
    self.train_cells = {n: train["x1"][n][rng.permutation(len(train["x1"][n]))[:max_cells]]
                        for n in train["x1"]}
    train_controls = np.concatenate(list(train["x0"].values()))
    train_controls = train_controls[rng.permutation(len(train_controls))[:max_cells]]
    self.real_feats = {n: self.featurise(c) for n, c in self.cells.items()}
    self.classifier_data = (
        np.concatenate([self.featurise(c) for c in self.train_cells.values()]
                       + [self.featurise(train_controls)]),
        np.array([n for n, c in self.train_cells.items() for _ in range(len(c))]
                 + [CONTROL_LABEL] * len(train_controls)))

  @functools.cached_property
  def classifier(self):
    """The condition classifier of the accuracy metric, fitted once on `classifier_data`."""
    return _metrics_images().condition_classifier(*self.classifier_data)

  def featurise(self, crops: np.ndarray) -> np.ndarray:
    return _metrics_images().compute_features(crops, self.features)

  def sources(self, name: str, n: int, rng: np.random.Generator, pairing: str) -> np.ndarray:
    """`[n, H, W, C]` control crops for `n` generated cells of condition `name`.

    Each row takes the plate of a real cell of the condition drawn at random,
    then a held-out control of that plate (`same_plate`) or of another
    plate (`other_plates`).
    """
    plates = self.plates[name][rng.integers(0, len(self.plates[name]), n)]
    out = []
    for p in plates:
      pool = ([self.controls[p]] if pairing == "same_plate" else
              [c for q, c in self.controls.items() if q != p])
      pool = np.concatenate(pool)
      out.append(pool[rng.integers(0, len(pool))])
    return np.stack(out)

  def batch(self, name: str, n: int, rng: np.random.Generator, pairing: str) -> dict:
    """Generation rows (`x0`, `cond`, `group`) of `n` cells of condition `name`."""
    return {"x0": self.sources(name, n, rng, pairing),
            "cond": np.repeat(self.cond[name][None].astype(np.float32), n, 0),
            "group": np.full(n, self.group[name], np.int32)}


def score(reference: Reference, generated: dict[str, np.ndarray],
          metric_names: Sequence[str] = METRICS) -> dict:
  """`eval.json`-style results of generated crops (condition -> `[n, H, W, C]`)."""
  split = reference.split
  gen_feats = {n: reference.featurise(generated[n]) for n in reference.names}
  mi = _metrics_images()
  m = mi.feature_metrics(reference.real_feats, gen_feats, **KID)
  out = {"fid_o": {"mean": m["fid_o"], "per_condition": {}},
         "fid_c": {"mean": m["fid_c"], "per_condition": m["fid_per_condition"]},
         "kid_o": {"mean": m["kid_o"], "per_condition": {}},
         "kid_c": {"mean": m["kid_c"], "per_condition": m["kid_per_condition"]}}
  if "accuracy" in metric_names:
    per = {n: mi.classifier_scores(reference.classifier, gen_feats[n],
                                   np.full(len(gen_feats[n]), n))["accuracy"]
           for n in reference.names}
    out["accuracy"] = {"mean": float(np.mean(list(per.values()))), "per_condition": per}
  return {k: {split: v} for k, v in out.items() if k in metric_names}


def merge(into: dict, results: dict) -> dict:
  """Adds one split's results to `into` (metric -> split -> ...)."""
  for metric, per_split in results.items():
    into.setdefault(metric, {}).update(per_split)
  return into


def generator(exp) -> eval_lib.Generator:
  """The run's sampler (unrolled like its train step, `flowzoo.train.Trainer`)."""
  ev = exp.config.eval
  return eval_lib.Generator(exp.method, solver=ev.solver, num_steps=ev.num_steps,
                            guidance=ev.guidance, chunk=ev.chunk, unroll=exp.trainer.unroll)


def generate(exp, params, reference: Reference, rng: jax.Array,
             gen: eval_lib.Generator) -> dict:
  """Generated crops, as many per condition as the reference holds."""
  ev = exp.config.eval
  np_rng = np.random.default_rng(exp.config.seed)
  out = {}
  for i, n in enumerate(reference.names):
    count = ev.samples_per_condition or len(reference.cells[n])
    batch = reference.batch(n, count, np_rng, exp.data.pairing)
    out[n] = gen(params, jax.random.fold_in(rng, i), batch)
  return out


def evaluate(exp, params, rng: jax.Array, *, console=None,
             features: str | Callable = "morphology") -> tuple[dict, dict, dict]:
  """Generates and scores every split of `config.eval.splits` the data has.

  Returns:
    `(results, samples, references)`: `eval.json`'s results,
    `"<split>/<condition>" -> [n, H, W, C]` generated crops, and each
    split's `Reference`.
  """
  ev = exp.config.eval
  results, samples, refs = {}, {}, {}
  gen = generator(exp)  # one compiled sampler for every split (chunks of one size)
  for split in (s for s in ev.splits if exp.data.has_split(s)):
    t0 = time.perf_counter()
    ref = refs[split] = Reference(exp.data, split, max_cells=ev.max_samples,
                                  seed=exp.config.seed, features=features)
    generated = generate(exp, params, ref, jax.random.fold_in(rng, len(refs)), gen)
    merge(results, score(ref, generated, ev.metrics))
    samples.update({f"{split}/{n}": g for n, g in generated.items()})
    if console is not None:
      console.say(f"evaluated {split}: {len(ref.names)} conditions, "
                  f"{sum(len(g) for g in generated.values())} crops "
                  f"({time.perf_counter() - t0:.1f}s)")
  return results, samples, refs


def baseline_predictions(reference: Reference, rng: np.random.Generator) -> dict:
  """`{kind: {condition: crops}}` of the trivial baselines (module docstring)."""
  pooled = np.concatenate(list(reference.train_cells.values()))
  out = {k: {} for k in KINDS}
  for n in reference.names:
    k = len(reference.cells[n])
    out["control"][n] = reference.sources(n, k, rng, "same_plate")
    out["pooled"][n] = pooled[rng.integers(0, len(pooled), k)]
    train = reference.train_cells[n]
    out["train_cells"][n] = train[rng.integers(0, len(train), k)]
  return out


def add_baselines(config, split: str, results: dict, seeds: Sequence[int]) -> dict:
  """Puts the trivial baselines' results into a report's `results` (`domain_eval`)."""
  from flowzoo import build  # pylint: disable=import-outside-toplevel
  data = build.build(build.DATASETS, config.dataset, "dataset", warn_unused=False)
  metrics = list(config.eval.metrics)
  if not data.has_split(split):
    return {"names": [], "metrics": metrics, "higher": [], "descriptions": {}, "notes": []}
  ref = Reference(data, split, max_cells=config.eval.max_samples, seed=config.seed)
  for kind, preds in baseline_predictions(ref, np.random.default_rng(config.seed)).items():
    scored = score(ref, preds, metrics)
    for s in seeds:
      results[kind, s] = scored
  return {"names": list(KINDS), "metrics": metrics,
          "higher": [m for m in metrics if m in HIGHER], "descriptions": dict(KINDS),
          "notes": ["Image metrics on morphology features (flowzoo.morphology), standardised "
                    "on the real cells; baselines use real cells only, no seed."]}


# -- pictures ---------------------------------------------------------------------------
def to_rgb(crops: np.ndarray) -> np.ndarray:
  """`[..., H, W, C]` crops in [-1, 1] -> displayable `[..., H, W, 3]` in [0, 1].

  Three channels in BBBC021's order (DNA, tubulin, actin) are shown as blue,
  green, red, the usual colours of these stains; another count shows the
  first channel in grey.
  """
  x = np.clip((np.asarray(crops, np.float32) + 1) / 2, 0, 1)
  if x.shape[-1] == 3:
    return x[..., ::-1]
  return np.repeat(x[..., :1], 3, -1)


def _mosaic(rows: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
  """`rows[i]`: `[n_i, H, W, 3]` -> one `[R (H + gap), max n (W + gap), 3]` image (white gaps)."""
  h, w = rows[0].shape[1:3]
  cols = max(len(r) for r in rows)
  out = np.ones((len(rows) * (h + gap), cols * (w + gap), 3), np.float32)
  for i, r in enumerate(rows):
    for j, im in enumerate(r):
      out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = im
  return out


def image_grid(path: Path, reference: Reference, generated: dict, *, per_row: int = 6,
               max_conditions: int = 10) -> Path:
  """PNG: per condition, `per_row` real held-out crops, then as many generated ones."""
  from flowzoo.plots import _pyplot  # pylint: disable=import-outside-toplevel
  plt = _pyplot()
  names = reference.names[:max_conditions]
  rows = [to_rgb(np.concatenate([reference.cells[n][:per_row], generated[n][:per_row]]))
          for n in names]
  fig, ax = plt.subplots(figsize=(1.0 * 2 * per_row, 1.1 * len(names) + 0.6))
  ax.imshow(_mosaic(rows), interpolation="nearest")
  h = rows[0].shape[1] + 2
  ax.set_yticks([h * (i + 0.5) for i in range(len(names))], names)
  ax.set_xticks([h * per_row / 2, h * per_row * 1.5], ["real (held out)", "generated"])
  ax.tick_params(length=0)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def trajectory_grid(path: Path, forward: np.ndarray, backward: np.ndarray, title: str) -> Path:
  """PNG: crops along t; `forward` / `backward` are `[T, n, H, W, C]` at `TRAJECTORY_TIMES`."""
  from flowzoo.plots import _pyplot  # pylint: disable=import-outside-toplevel
  plt = _pyplot()
  rows = [to_rgb(forward[:, i]) for i in range(forward.shape[1])]
  rows += [to_rgb(backward[:, i]) for i in range(backward.shape[1])]
  fig, ax = plt.subplots(figsize=(1.2 * len(TRAJECTORY_TIMES) + 1.5, 1.1 * len(rows) + 0.8))
  ax.imshow(_mosaic(rows), interpolation="nearest")
  h = forward.shape[2] + 2
  ax.set_xticks([h * (j + 0.5) for j in range(len(TRAJECTORY_TIMES))],
                [f"t={t:g}" for t in TRAJECTORY_TIMES])
  ax.set_yticks([h * (i + 0.5) for i in range(len(rows))],
                ["control ->"] * forward.shape[1] + ["<- treated"] * backward.shape[1])
  ax.set_title(title, fontsize=9)
  ax.tick_params(length=0)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def trajectories(exp, params, reference: Reference, name: str, n: int = 3) -> dict:
  """The learned flow of condition `name` at `TRAJECTORY_TIMES` (`Method.path`).

  Returns `{"forward": [T, n, H, W, C]` from held-out controls of the
  condition's plates, `"backward"`: from real held-out treated cells back to
  t = 0`}` (CellFlux's interpolation figure).
  """
  ev = exp.config.eval
  rng = np.random.default_rng(exp.config.seed)
  batch = reference.batch(name, n, rng, exp.data.pairing)
  kw = dict(solver=ev.solver, num_steps=ev.num_steps, guidance=ev.guidance,
            unroll=exp.trainer.unroll)
  path = jax.jit(lambda p, b, x, backward: exp.method.path(p, b, x, TRAJECTORY_TIMES,
                                                           backward=backward, **kw),
                 static_argnums=3)
  cells = reference.cells[name][:n]
  fwd = path(params, batch, batch["x0"], False)
  back = path(params, {k: v[:len(cells)] for k, v in batch.items()}, cells, True)
  return {"forward": np.asarray(fwd), "backward": np.asarray(back)}

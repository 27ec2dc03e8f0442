"""PNG figures of a run: what the model generates next to the data, and its scores.

`plot_run` writes, into the run directory (and returns, for TensorBoard):

* `<split>_real_vs_generated.png` for 2-D data, for a training split AND a
  held-out one: per condition the real population above the generated one,
  on the same axes (side by side, so neither hides the other), titled by
  what the condition is (`Populations.title`: letters "S, 54°");
* `<split>_flow.png` for 2-D data (held-out split): samples at t = 0, 0.5, 1
  beside the target (the layout of MixFlow Fig. 2);
* `<split>_pca_<condition>.png` for vector data of more than 2 dimensions,
  one per held-out condition: real and generated samples projected on the
  first two principal components of that condition's real samples;
* `<split>_metrics.png`: per-condition bars of every evaluated metric (lower
  is better), for every evaluated split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from flowzoo import evaluate as eval_lib
from flowzoo.data.pca import fit_pca

# Most points drawn per scatter: more only blackens the silhouette.
MAX_POINTS = 1500
REAL, GENERATED = "0.35", "tab:blue"


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")  # headless: files only
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _thin(x: np.ndarray, n: int = MAX_POINTS) -> np.ndarray:
  return x if len(x) <= n else x[np.linspace(0, len(x) - 1, n).astype(int)]


def _pair(top, bottom, real: np.ndarray, fake: np.ndarray, title: str) -> None:
  """Real `[n, 2]` on `top`, generated `[m, 2]` on `bottom`, on the same axes."""
  # Limits from the real data (plus a margin), so a generated outlier cannot shrink it.
  lo, hi = real.min(0), real.max(0)
  centre, half = (lo + hi) / 2, 0.65 * (hi - lo).max() + 1e-6
  for ax, pts, colour in ((top, real, REAL), (bottom, fake, GENERATED)):
    ax.set_axis_on()
    # Small markers for a dense silhouette, larger ones so a few dozen cells show.
    ax.scatter(*_thin(pts).T, s=1.5 if len(pts) > 300 else 8, c=colour, linewidths=0,
               rasterized=True)
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
  top.set_title(title, fontsize=9)
  outside = float(np.mean(np.any(np.abs(fake - centre) > half, axis=1)))
  if outside > 0.01:  # said, not rescaled: the two panels stay comparable
    bottom.set_title(f"{outside:.0%} of generated outside", fontsize=7, color="tab:red")


def real_vs_generated(path: str | Path, titles: Sequence[str], real: Sequence[np.ndarray],
                      fake: Sequence[np.ndarray], *, max_cols: int = 5,
                      suptitle: str = "") -> None:
  """Per condition, real `[n, 2]` (top) above generated `[m, 2]` (below) on the same axes.

  Conditions fill up to `max_cols` columns; each block of columns takes two
  rows, "real" and "generated".
  """
  plt = _pyplot()
  n = len(titles)
  cols = min(n, max_cols)
  blocks = -(-n // cols)
  fig, axes = plt.subplots(2 * blocks, cols, figsize=(2.3 * cols, 4.4 * blocks + 0.4),
                           squeeze=False)
  for ax in axes.flat:
    ax.set_axis_off()
  for i, (title, r, f) in enumerate(zip(titles, real, fake)):
    top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
    _pair(top, bottom, r, f, title)
    if i % cols == 0:
      top.set_ylabel("real", fontsize=9, color=REAL)
      bottom.set_ylabel("generated", fontsize=9, color=GENERATED)
  if suptitle:
    fig.suptitle(suptitle, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def flow_snapshots(path: str | Path, titles: Sequence[str], trajectories: Sequence[np.ndarray],
                   real: Sequence[np.ndarray], times: Sequence[float] = (0.0, 0.5, 1.0)) -> None:
  """Rows = conditions; columns = samples at `times` then the target.

  Args:
    trajectories: per condition `[len(times), n, 2]`.
  """
  plt = _pyplot()
  rows, cols = len(titles), len(times) + 1
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
  for r, (title, traj, target) in enumerate(zip(titles, trajectories, real)):
    panels = [*traj, target]
    labels = [f"t = {t:g}" for t in times] + ["target (real)"]
    lim = np.abs(np.concatenate(panels)).max() * 1.05
    for c, (pts, label) in enumerate(zip(panels, labels)):
      ax = axes[r, c]
      ax.scatter(*_thin(pts).T, s=1, c=REAL if c == cols - 1 else GENERATED, linewidths=0,
                 rasterized=True)
      ax.set_xlim(-lim, lim)
      ax.set_ylim(-lim, lim)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(label, fontsize=9)
    axes[r, 0].set_ylabel(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def metric_bars(path: str | Path, split: str, results: dict, titles: dict[str, str]) -> None:
  """One panel per metric: a bar per condition of `split` (lower is better).

  Args:
    results: `evaluate`'s results (metric -> split -> mean / per_condition).
    titles: condition name -> title.
  """
  plt = _pyplot()
  ms = [m for m in results if split in results[m]]
  names = list(results[ms[0]][split]["per_condition"])
  fig, axes = plt.subplots(1, len(ms), figsize=(3.0 * len(ms), 0.8 + 0.22 * len(names)),
                           squeeze=False)
  for ax, m in zip(axes[0], ms):
    r = results[m][split]
    vals = [r["per_condition"][n] for n in names]
    ax.barh(range(len(names)), vals, color="tab:blue", alpha=0.8)
    ax.axvline(r["mean"], color="k", lw=1, ls="--", label=f"mean {r['mean']:.3g}")
    ax.set_yticks(range(len(names)), [titles.get(n, n) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{m} (lower is better)", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(axis="x", labelsize=7)
  fig.suptitle(f"{split} conditions: per-condition scores", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def pca_real_vs_generated(path: str | Path, title: str, real: np.ndarray,
                          fake: np.ndarray) -> None:
  """Real (left) and generated (right) `[n, D]` on the first two principal axes of `real`.

  The PCA is fitted on this condition's real samples: the axes along which
  the real population varies most, where a wrong spread or shift shows.
  """
  plt = _pyplot()
  project = fit_pca(real, 2)
  ratio = project.pca.explained_variance_ratio_
  fig, (left, right) = plt.subplots(1, 2, figsize=(6.0, 3.3))
  _pair(left, right, project(real), project(fake), "real")
  left.set_title("real", fontsize=9, color=REAL)
  if not right.get_title():
    right.set_title("generated", fontsize=9, color=GENERATED)
  for ax in (left, right):
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of real variance)", fontsize=7)
  left.set_ylabel(f"PC2 ({ratio[1]:.0%})", fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def file_safe(name: str) -> str:
  """A condition name as part of a file name ("taxol@3" -> "taxol_3")."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "condition"


def spread(ids: np.ndarray, k: int) -> np.ndarray:
  """At most `k` of `ids`, evenly spaced, so a plot shows several letters, not one."""
  if len(ids) <= k:
    return ids
  return ids[np.unique(np.linspace(0, len(ids) - 1, k).round().astype(int))]


def plot_run(method, params, pops, samples: dict, results: dict, workdir: Path, rng,
             ev) -> list[tuple[str, Path]]:
  """Writes the figures of the module docstring for the evaluated splits.

  Args:
    method, params: the trained method and its (EMA) parameters.
    pops: the run's `Populations`; samples: the evaluation's generated samples
      (`{"split/name": [n, *event]}`); results: its scores; rng: the
      trajectories' key; ev: `config.eval`.
  Returns:
    `[(TensorBoard tag, path)]` of the files written.
  """
  workdir = Path(workdir)
  splits = [s for s in ev.splits if pops.has_split(s) and any(
      k.startswith(f"{s}/") for k in samples)]
  heldout = next((s for s in ("heldout", "validation") if s in splits), None)
  written = []
  titles = {n: pops.title(k) for k, n in enumerate(pops.names)}
  vector = len(pops.event_shape) == 1
  for split in splits:
    ids = spread(pops.split_ids(split), ev.plot_conditions)
    names = [pops.names[k] for k in ids]
    real = [pops.samples[k] for k in ids]
    fake = [samples[f"{split}/{n}"] for n in names]
    if pops.event_shape == (2,):
      path = workdir / f"{split}_real_vs_generated.png"
      real_vs_generated(path, [titles[n] for n in names], real, fake,
                        suptitle=f"{split} conditions: real (top) vs generated (below)")
      written.append((f"{split}/real_vs_generated", path))
    elif vector and pops.event_shape[0] > 2 and split == heldout:
      for k in pops.split_ids(split):  # every held-out condition, not a sample of them
        n = pops.names[k]
        path = workdir / f"{split}_pca_{file_safe(n)}.png"
        pca_real_vs_generated(path, titles[n], pops.samples[k], samples[f"{split}/{n}"])
        written.append((f"{split}/pca/{n}", path))
    if any(split in r for r in results.values()):
      path = workdir / f"{split}_metrics.png"
      metric_bars(path, split, results, titles)
      written.append((f"{split}/metrics", path))
  flow_split = heldout or (splits[0] if splits else None)
  if pops.event_shape == (2,) and flow_split is not None:
    ids = spread(pops.split_ids(flow_split), min(ev.plot_conditions, 5))
    real = [pops.samples[k] for k in ids]
    counts = [min(len(r), 500) for r in real]
    gen = eval_lib.Generator(method, solver=ev.solver, num_steps=ev.num_steps,
                             guidance=ev.guidance, chunk=ev.chunk)
    traj = gen.trajectory(params, rng, eval_lib.condition_batch(
        pops, ids, counts, np.random.default_rng(0)))
    parts = np.split(traj, np.cumsum(counts)[:-1], axis=1)
    path = workdir / f"{flow_split}_flow.png"
    flow_snapshots(path, [pops.title(k) for k in ids], parts, real)
    written.append((f"{flow_split}/flow", path))
  return written

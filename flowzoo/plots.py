"""PNG plots for 2-D populations: real vs generated, and the flow at t = 0, 0.5, 1
(the layout of MixFlow Fig. 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from flowzoo import evaluate as eval_lib


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")  # headless: files only
  import matplotlib.pyplot as plt
  return plt


def real_vs_generated(path: str | Path, names: Sequence[str], real: Sequence[np.ndarray],
                      fake: Sequence[np.ndarray], *, max_cols: int = 5) -> None:
  """One panel per condition with real (grey) and generated (blue) points `[n, 2]`."""
  plt = _pyplot()
  n = len(names)
  cols = min(n, max_cols)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
  for ax in axes.flat:
    ax.set_axis_off()
  for ax, name, r, f in zip(axes.flat, names, real, fake):
    ax.scatter(r[:, 0], r[:, 1], s=1, c="0.6", label="real")
    ax.scatter(f[:, 0], f[:, 1], s=1, c="tab:blue", label="generated")
    ax.set_title(name, fontsize=8)
    ax.set_aspect("equal")
  axes.flat[0].legend(loc="upper left", fontsize=6, markerscale=4)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def flow_snapshots(path: str | Path, names: Sequence[str], trajectories: Sequence[np.ndarray],
                   real: Sequence[np.ndarray], times: Sequence[float] = (0.0, 0.5, 1.0)) -> None:
  """Rows = conditions; columns = samples at `times` then the target.

  Args:
    trajectories: per condition `[len(times), n, 2]`.
  """
  plt = _pyplot()
  rows, cols = len(names), len(times) + 1
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
  for r, (name, traj, target) in enumerate(zip(names, trajectories, real)):
    panels = [*traj, target]
    titles = [f"t = {t:g}" for t in times] + ["target"]
    lim = np.abs(np.concatenate(panels)).max() * 1.05
    for c, (pts, title) in enumerate(zip(panels, titles)):
      ax = axes[r, c]
      ax.scatter(pts[:, 0], pts[:, 1], s=1, c="0.4" if c == cols - 1 else "tab:blue")
      ax.set_xlim(-lim, lim)
      ax.set_ylim(-lim, lim)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(title, fontsize=9)
    axes[r, 0].set_ylabel(name, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_2d_run(method, params, pops, samples: dict, workdir: Path, rng, ev) -> None:
  """Real vs generated and flow snapshots of 2-D data, for the first evaluated split.

  Args:
    method, params: the trained method and its (EMA) parameters.
    pops: the run's `Populations`; samples: the evaluation's generated samples
      (`{"split/name": [n, 2]}`); rng: the trajectories' key; ev: `config.eval`.
  """
  split = next((s for s in ("heldout", "validation", "train") if pops.has_split(s)))
  ids = pops.split_ids(split)[: ev.plot_conditions]
  names = [pops.names[k] for k in ids]
  real = [pops.samples[k] for k in ids]
  real_vs_generated(Path(workdir) / f"{split}_real_vs_generated.png", names, real,
                          [samples[f"{split}/{n}"] for n in names])
  counts = [min(len(r), 500) for r in real]
  gen = eval_lib.Generator(method, solver=ev.solver, num_steps=ev.num_steps,
                           guidance=ev.guidance, chunk=ev.chunk)
  traj = gen.trajectory(params, rng, eval_lib.condition_batch(
      pops, ids, counts, np.random.default_rng(0)))
  parts = np.split(traj, np.cumsum(counts)[:-1], axis=1)
  flow_snapshots(Path(workdir) / f"{split}_flow.png", names, parts, real)

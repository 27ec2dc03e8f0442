"""The report writer: tables, CSV/JSON, plots and `results/` pages from run evaluations.

Everything a sweep or a run-with-baselines reports goes through here, so a
number in `results/*.md` is exactly what the runner computed:

    summarize      eval.json contents of (point, seed) runs -> mean ± std per metric
    format_table   markdown table (+ relative change vs a reference point)
    write_outputs  <workdir>/sweep.{md,json,csv,png}
    results_page   a section of `results/<config>.md`: the command and its table

Lower is better for every metric reported here (distances and divergences).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def summarize(points: Sequence, seeds: Sequence[int], results: Mapping, *,
              split: str, metrics: Sequence[str]) -> dict:
  """Mean ± std over seeds of each point's split mean, per metric.

  Args:
    results: `(point name, seed) -> eval results` (eval.json contents).
  Returns:
    {"split", "metrics", "seeds", "points": [{"name", "overrides",
    "metrics": {m: {"mean", "std", "values", "per_condition"}}}]}: std is the
    population std (0 for one seed); values the split mean of each seed;
    per_condition maps each condition to its value of each seed. A metric
    or split a run lacks is reported as NaN.
  """
  rows = []
  for p in points:
    row = {"name": p.name, "overrides": {k: _jsonable(v) for k, v in p.overrides.items()},
           "metrics": {}}
    for m in metrics:
      runs = [results[p.name, s].get(m, {}).get(split, {}) for s in seeds]
      vals = [float(r.get("mean", np.nan)) for r in runs]
      conds = list(dict.fromkeys(c for r in runs for c in r.get("per_condition", {})))
      row["metrics"][m] = {
          "mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": vals,
          "per_condition": {c: [float(r.get("per_condition", {}).get(c, np.nan)) for r in runs]
                            for c in conds}}
    rows.append(row)
  return {"split": split, "metrics": list(metrics), "seeds": list(seeds), "points": rows}


def _jsonable(v):
  return list(v) if isinstance(v, tuple) else v


def format_table(summary: dict) -> str:
  """Markdown table: one row per point, `mean ± std` per metric (+ change vs reference)."""
  ms, ref = summary["metrics"], summary.get("reference")
  ref_row = next((r for r in summary["points"] if r["name"] == ref), None)
  n = len(summary["seeds"])
  arms = summary.get("arms", {})
  head = ["point"] + (["what it is"] if arms else []) + [f"{m} ({summary['split']})" for m in ms]
  if ref_row is not None:
    head.append(f"change vs {ref} ({'/'.join(ms)})")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in summary["points"]:
    cells = [r["name"]] + ([arms.get(r["name"], "")] if arms else [])
    for m in ms:
      v = r["metrics"][m]
      cells.append(f"{v['mean']:.4g} ± {v['std']:.2g}" if n > 1 else f"{v['mean']:.4g}")
    if ref_row is not None:
      cells.append(" / ".join(_pct(r["metrics"][m]["mean"], ref_row["metrics"][m]["mean"])
                              for m in ms))
    lines.append("| " + " | ".join(cells) + " |")
  foot = (f"\n{n} seed(s): {summary['seeds']}" + (" (mean ± std over seeds)" if n > 1 else "")
          + "; lower is better for every metric.")
  title = f"{summary['title']}\n\n" if summary.get("title") else ""
  return title + "\n".join(lines) + foot


def _pct(x: float, ref: float) -> str:
  if not np.isfinite(x) or not np.isfinite(ref) or ref == 0:
    return "n/a"
  return f"{100.0 * (x - ref) / abs(ref):+.0f}%"


def write_outputs(summary: dict, workdir: str | Path, stem: str = "sweep") -> None:
  """<stem>.md, .json, .csv and .png in `workdir`."""
  workdir = Path(workdir)
  (workdir / f"{stem}.md").write_text(format_table(summary) + "\n")
  (workdir / f"{stem}.json").write_text(json.dumps(summary, indent=2))
  with open(workdir / f"{stem}.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["point", "metric", "split", "mean", "std", "num_seeds", "values"])
    for r in summary["points"]:
      for m in summary["metrics"]:
        v = r["metrics"][m]
        w.writerow([r["name"], m, summary["split"], v["mean"], v["std"], len(v["values"]),
                    " ".join(f"{x:.6g}" for x in v["values"])])
  plot(summary, workdir / f"{stem}.png")


def plot(summary: dict, path: str | Path) -> None:
  """Writes `figure(summary)` to `path`."""
  fig = figure(summary)
  fig.savefig(path, dpi=110)
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  plt.close(fig)


def figure(summary: dict):
  """One panel per metric: per point, its conditions' values and its split mean.

  Each small dot is one condition (its mean over seeds), so a point that
  wins on average but loses on some conditions shows it; the large marker
  is the split mean, with an error bar of the std over seeds only when
  there are at least 2 seeds (one seed has no spread to show). Every axis
  says "lower is better".
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")  # headless: files only
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  ms, rows = summary["metrics"], summary["points"]
  names = [r["name"] for r in rows]
  multi = len(summary["seeds"]) >= 2
  fig, axes = plt.subplots(1, len(ms), figsize=(max(3.0, 0.7 * len(rows) + 1.5) * len(ms), 3.6),
                           squeeze=False)
  jitter = np.random.default_rng(0)  # fixed: the figure is reproducible
  for ax, m in zip(axes[0], ms):
    for i, r in enumerate(rows):
      v = r["metrics"][m]
      per = [np.nanmean(x) for x in v.get("per_condition", {}).values()]
      if per:
        ax.scatter(i + jitter.uniform(-0.18, 0.18, len(per)), per, s=9, color="0.55",
                   alpha=0.8, linewidths=0, zorder=2,
                   label="one condition" if i == 0 else None)
      ax.errorbar(i, v["mean"], yerr=v["std"] if multi else None, fmt="D", color="tab:blue",
                  ms=6, capsize=4 if multi else 0, zorder=3,
                  label=("split mean ± std over seeds" if multi else "split mean")
                  if i == 0 else None)
    ax.set_xticks(range(len(rows)), names, rotation=45 if len(rows) > 3 else 0,
                  ha="right" if len(rows) > 3 else "center", fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel(f"{m} ({summary['split']}), lower is better", fontsize=8)
    ax.set_title(m, fontsize=9)
    ax.legend(fontsize=6, loc="best")
  seeds = summary["seeds"]
  fig.suptitle(f"{summary.get('title') or 'sweep'} ({len(seeds)} seed{'s' if multi else ''})",
               fontsize=9)
  fig.tight_layout()
  return fig


def results_page(summary: dict, page: str | Path, *, section: str, command: str) -> Path:
  """Writes (or replaces) `section` of the markdown page `page` with the command and table.

  A page collects the final tables of one config (big_vision keeps such
  tables next to its configs); re-running a sweep replaces its own section
  and keeps the others.

  Args:
    summary: from `summarize` (with `title`, `reference`).
    page: path of `results/<config>.md`.
    section: the section heading (e.g. the sweep's name and variant).
    command: the exact command that produced the numbers.
  Returns:
    the page path.
  """
  page = Path(page)
  body = f"## {section}\n\n```\n{command}\n```\n\n{format_table(summary)}\n"
  text = page.read_text() if page.exists() else f"# Results: {page.stem}\n\n" \
      "Written by `flowzoo.report.results_page` (`python -m experiments.sweep ... " \
      "--results=...`); do not edit the tables by hand.\n\n"
  pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
  text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else \
      text.rstrip("\n") + "\n\n" + body
  page.parent.mkdir(parents=True, exist_ok=True)
  page.write_text(text.rstrip("\n") + "\n")
  return page

"""The report writer: tables, CSV/JSON, plots and `results/` pages from run evaluations.

Everything a sweep or a run-with-baselines reports goes through here, so a
number in `results/*.md` is exactly what the runner computed:

    summarize      eval.json contents of (point, seed) runs -> mean ± std per metric,
                   and a bootstrap interval over conditions
    format_table   markdown table (+ relative change vs a reference point, the
                   best row per metric, and which learned rows do not beat a
                   trivial baseline)
    write_outputs  <workdir>/sweep.{md,json,csv,png}
    results_page   a section of `results/<config>.md`: the command and its table

Lower is better unless a metric is listed in the summary's `higher`
(e.g. `top1`, `moa_accuracy`); their headers say "higher better".
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


MIN_CI_CONDITIONS = 5


def summarize(points: Sequence, seeds: Sequence[int], results: Mapping, *,
              split: str, metrics: Sequence[str], higher: Sequence[str] = (),
              baselines: Sequence[str] = ()) -> dict:
  """Mean ± std over seeds of each point's split mean, per metric.

  Args:
    results: `(point name, seed) -> eval results` (eval.json contents).
    higher: metrics for which higher is better.
    baselines: names of points that are trivial baselines (not learned).
  Returns:
    {"split", "metrics", "seeds", "higher", "baselines", "points": [{"name",
    "overrides", "metrics": {m: {"mean", "std", "values", "ci", "per_condition"}}}]}.
    std is the population std (0 for one seed); values the split mean of each
    seed; per_condition maps each condition to its value of each seed; a metric
    or split a run lacks is reported as NaN. "ci" is the 95 % percentile
    bootstrap interval over the conditions of their seed-averaged values
    (`metrics_profiles.bootstrap_ci`), None without per-condition values or
    with fewer than `MIN_CI_CONDITIONS`.
  """
  from flowzoo.metrics_profiles import bootstrap_ci  # pylint: disable=import-outside-toplevel
  rows = []
  for p in points:
    row = {"name": p.name, "overrides": {k: _jsonable(v) for k, v in p.overrides.items()},
           "metrics": {}}
    for m in metrics:
      by_seed = [results[p.name, s].get(m, {}).get(split, {}) for s in seeds]
      vals = [float(r.get("mean", np.nan)) for r in by_seed]
      per = [r.get("per_condition") for r in by_seed]
      ci = None
      # The same conditions in every seed, and enough of them for an interval
      # (with 2 letters a "95 %" bootstrap interval is just [min, max]).
      if all(per) and len({tuple(c) for c in per}) == 1 and len(per[0]) >= MIN_CI_CONDITIONS:
        with warnings.catch_warnings():  # a condition NaN in every seed stays NaN
          warnings.simplefilter("ignore", RuntimeWarning)
          per_cond = np.nanmean([[c[n] for n in per[0]] for c in per], axis=0)
        ci = [float(x) for x in bootstrap_ci(per_cond)[1:]]
      # Equal values (a deterministic baseline) have std 0, not rounding noise.
      std = 0.0 if len(set(vals)) == 1 else float(np.std(vals))
      conds = list(dict.fromkeys(c for r in by_seed for c in r.get("per_condition", {})))
      row["metrics"][m] = {
          "mean": float(np.mean(vals)), "std": std, "values": vals, "ci": ci,
          "per_condition": {c: [float(r.get("per_condition", {}).get(c, np.nan)) for r in by_seed]
                            for c in conds}}
    rows.append(row)
  return {"split": split, "metrics": list(metrics), "seeds": list(seeds), "points": rows,
          "higher": [m for m in metrics if m in set(higher)], "baselines": list(baselines)}


def _jsonable(v):
  return list(v) if isinstance(v, tuple) else v


def _better(a: float, b: float, higher: bool) -> bool:
  return a > b if higher else a < b


def verdicts(summary: dict) -> list[str]:
  """The best row per metric, and each learned row's metrics where a trivial baseline wins."""
  ms, rows = summary["metrics"], summary["points"]
  higher = set(summary.get("higher", ()))
  base = [r for r in rows if r["name"] in set(summary.get("baselines", ()))]
  lines = []
  best = []
  for m in ms:
    finite = [r for r in rows if np.isfinite(r["metrics"][m]["mean"])]
    if finite:
      top = max(finite, key=lambda r: r["metrics"][m]["mean"] * (1 if m in higher else -1))
      best.append(f"{m}: {top['name']}")
  if best and len(rows) > 1:  # one row is trivially the best
    lines.append("Best per metric: " + "; ".join(best) + ".")
  # compare_to (sweeps over datasets): the baselines scored on each point's data.
  compare_to = summary.get("compare_to")
  for r in rows:
    if not base or r in base:
      continue
    mine = [b for b in base if compare_to is None or b["name"] in compare_to.get(r["name"], ())]
    lost = []
    for m in ms:
      v = r["metrics"][m]["mean"]
      # A NaN learned value beats nothing (NaN comparisons are all False).
      winners = [b["name"] for b in mine if np.isfinite(b["metrics"][m]["mean"])
                 and (not np.isfinite(v) or _better(b["metrics"][m]["mean"], v, m in higher))]
      if winners:
        lost.append(f"{m} ({', '.join(winners)})")
    lines.append(f"{r['name']} does not beat the trivial baseline(s) on: " + "; ".join(lost) + "."
                 if lost else f"{r['name']} beats every trivial baseline on every metric.")
  lines += _paired_lines(summary)
  return lines


def _paired_lines(summary: dict) -> list[str]:
  """Each learned row vs the reference row, paired over seeds (`paired_comparison`)."""
  from flowzoo.metrics_profiles import paired_comparison  # pylint: disable=import-outside-toplevel
  rows, ref = summary["points"], summary.get("reference")
  ref_row = next((r for r in rows if r["name"] == ref), None)
  if ref_row is None or len(summary["seeds"]) < 2:
    return []
  higher = set(summary.get("higher", ()))
  lines = []
  for r in rows:
    if r is ref_row or r["name"] in set(summary.get("baselines", ())):
      continue
    parts = []
    for m in summary["metrics"]:
      a, b = r["metrics"][m]["values"], ref_row["metrics"][m]["values"]
      if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        continue
      c = paired_comparison(a, b, m in higher)
      parts.append(f"{m} {c['mean_diff']:+.3g} [{c['lo']:+.3g}, {c['hi']:+.3g}], better in "
                   f"{c['a_wins']}/{c['n_seeds']}")
    if parts:
      lines.append(f"{r['name']} - {ref} (paired over seeds, 95 % t-interval): "
                   + "; ".join(parts) + ".")
  return lines


def format_table(summary: dict) -> str:
  """Markdown table: one row per point, `mean ± std [ci]` per metric (+ change vs reference),
  then `verdicts`."""
  ms, ref = summary["metrics"], summary.get("reference")
  ref_row = next((r for r in summary["points"] if r["name"] == ref), None)
  n = len(summary["seeds"])
  higher = set(summary.get("higher", ()))
  arms = summary.get("arms", {})
  head = ["point"] + (["what it is"] if arms else []) + [
      f"{m} ({summary['split']}{', higher better' if m in higher else ''})" for m in ms]
  if ref_row is not None:
    head.append(f"change vs {ref} ({'/'.join(ms)})")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in summary["points"]:
    cells = [r["name"] + (" (baseline)" if r["name"] in summary.get("baselines", ()) else "")]
    cells += [arms.get(r["name"], "")] if arms else []
    for m in ms:
      v = r["metrics"][m]
      cell = f"{v['mean']:.4g} ± {v['std']:.2g}" if n > 1 else f"{v['mean']:.4g}"
      if v.get("ci") is not None:
        cell += f" [{v['ci'][0]:.3g}, {v['ci'][1]:.3g}]"
      cells.append(cell)
    if ref_row is not None:
      cells.append(" / ".join(_pct(r["metrics"][m]["mean"], ref_row["metrics"][m]["mean"])
                              for m in ms))
    lines.append("| " + " | ".join(cells) + " |")
  foot = f"\n{n} seed(s): {summary['seeds']}" + (" (mean ± std over seeds)" if n > 1 else "")
  if any(r["metrics"][m].get("ci") is not None for r in summary["points"] for m in ms):
    foot += "; [95 % bootstrap interval over conditions]"
  foot += "".join(f"\n{line}" for line in verdicts(summary))
  foot += "".join(f"\n{note}" for note in summary.get("notes", ()))
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
    better = "higher" if m in set(summary.get("higher", ())) else "lower"
    ax.set_ylabel(f"{m} ({summary['split']}), {better} is better", fontsize=8)
    ax.set_title(m, fontsize=9)
    ax.legend(fontsize=6, loc="best")
  seeds = summary["seeds"]
  fig.suptitle(f"{summary.get('title') or 'sweep'} ({len(seeds)} seed{'s' if multi else ''})",
               fontsize=9)
  fig.tight_layout()
  return fig


def results_page(summary: dict, page: str | Path, *, section: str, command: str,
                 figures: Sequence[str | Path] = ()) -> Path:
  """Writes (or replaces) `section` of the markdown page `page` with the command and table.

  A page collects the final tables of one config (big_vision keeps such
  tables next to its configs); re-running a sweep replaces its own section
  and keeps the others.

  Args:
    summary: from `summarize` (with `title`, `reference`).
    page: path of `results/<config>.md`.
    section: the section heading (e.g. the sweep's name and variant).
    command: the exact command that produced the numbers.
    figures: PNG files of the run, copied to `results/<page stem>/` and shown
      below the table.
  Returns:
    the page path.
  """
  page = Path(page)
  body = (f"## {section}\n\n```\n{command}\n```\n\n{format_table(summary)}\n\n"
          "Lower is better unless a header says \"higher better\".\n")
  if figures:
    folder = page.parent / page.stem
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", section).strip("_")
    for fig in map(Path, figures):
      shutil.copyfile(fig, folder / f"{slug}_{fig.name}")
      body += f"\n![{fig.stem}]({page.stem}/{slug}_{fig.name})\n"
  text = page.read_text() if page.exists() else f"# Results: {page.stem}\n\n" \
      "Written by `flowzoo.report.results_page` (`experiments.run` or " \
      "`experiments.sweep` with `--results=...`); do not edit the tables by hand.\n\n"
  pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
  text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else \
      text.rstrip("\n") + "\n\n" + body
  page.parent.mkdir(parents=True, exist_ok=True)
  page.write_text(text.rstrip("\n") + "\n")
  return page

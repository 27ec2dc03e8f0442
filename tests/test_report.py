"""The report writer: summary statistics, tables and results pages."""


import numpy as np

from flowzoo import report
from flowzoo.sweep import Point


def _run(v):
  """eval.json of a run whose two conditions score v - 1 and v + 1 (mean v)."""
  return {"w2": {"heldout": {"mean": v, "per_condition": {"S, 18°": v - 1, "S, 54°": v + 1}}}}


def _summary(values_a, values_b):
  results = {("a", s): _run(v) for s, v in enumerate(values_a)}
  results.update({("b", s): _run(v) for s, v in enumerate(values_b)})
  return report.summarize([Point("a"), Point("b")], list(range(len(values_a))), results,
                          split="heldout", metrics=("w2",))


def test_summary_is_mean_and_population_std_over_seeds():
  s = _summary([1.0, 3.0], [2.0, 2.0])
  a, b = s["points"]
  assert a["metrics"]["w2"] == {"mean": 2.0, "std": 1.0, "values": [1.0, 3.0], "ci": None,
                                "per_condition": {"S, 18°": [0.0, 2.0], "S, 54°": [2.0, 4.0]}}
  assert b["metrics"]["w2"]["std"] == 0.0
  s["reference"] = "b"
  table = report.format_table(s)
  assert "| a | 2 ± 1 | +0% |" in table and "change vs b" in table


def test_results_page_replaces_its_own_section_and_keeps_others(tmp_path):
  page = tmp_path / "results" / "x.md"
  report.results_page(_summary([1.0], [2.0]), page, section="x.py sweep one", command="cmd 1")
  report.results_page(_summary([5.0], [6.0]), page, section="x.py sweep two", command="cmd 2")
  report.results_page(_summary([3.0], [4.0]), page, section="x.py sweep one", command="cmd 1b")
  text = page.read_text()
  assert text.count("## x.py sweep one") == 1 and text.count("## x.py sweep two") == 1
  assert "cmd 1b" in text and "cmd 1\n" not in text and "| a | 3 |" in text
  assert "| a | 5 |" in text and "| a | 1 |" not in text
  assert text.index("sweep one") < text.index("sweep two")  # order kept


def test_results_page_copies_its_figures_beside_it_and_links_them(tmp_path):
  fig = tmp_path / "run" / "train_real_vs_generated.png"
  fig.parent.mkdir()
  fig.write_bytes(b"\x89PNG fake")
  page = tmp_path / "results" / "x.md"
  report.results_page(_summary([1.0], [2.0]), page, section="x.py run", command="cmd",
                      figures=[fig])
  copied = tmp_path / "results" / "x" / "x_py_run_train_real_vs_generated.png"
  assert copied.read_bytes() == fig.read_bytes()
  assert "](x/x_py_run_train_real_vs_generated.png)" in page.read_text()


def test_intervals_over_conditions_and_verdicts_against_baselines():
  conds = [f"c{i}" for i in range(5)]
  per = {"a": dict(zip(conds, [1.0, 3.0, 1.0, 3.0, 2.0])), "b": dict.fromkeys(conds, 2.0),
         "base": dict.fromkeys(conds, 0.5), "nan": dict.fromkeys(conds, float("nan"))}
  results = {(n, 0): {"rmse": {"heldout": {"mean": float(np.mean(list(v.values()))),
                                           "per_condition": v}},
                      "top1": {"heldout": {"mean": 1.0 if n == "a" else 0.0,
                                           "per_condition": dict.fromkeys(conds, 1.0)}}}
             for n, v in per.items()}
  s = report.summarize([Point(n) for n in per], [0], results, split="heldout",
                       metrics=("rmse", "top1"), higher=("top1",), baselines=("base",))
  a = s["points"][0]["metrics"]["rmse"]
  assert a["mean"] == 2.0 and 1.0 <= a["ci"][0] < 2.0 < a["ci"][1] <= 3.0
  assert s["points"][1]["metrics"]["rmse"]["ci"] == [2.0, 2.0]
  table = report.format_table(s)
  assert "| base (baseline) |" in table and "top1 (heldout, higher better)" in table
  assert "Best per metric: rmse: base; top1: a." in table
  assert "a does not beat the trivial baseline(s) on: rmse (base)." in table
  assert "b does not beat the trivial baseline(s) on: rmse (base)." in table  # top1 tie: 0 = 0
  assert "nan does not beat the trivial baseline(s) on: rmse (base)." in table  # NaN loses
  # Too few conditions for an interval: none (2 letters would give [min, max]).
  two = {k: {m: {"heldout": {"mean": 1.0, "per_condition": {"x": 1.0, "y": 1.0}}}
             for m in ("rmse",)} for k in results}
  s2 = report.summarize([Point(n) for n in per], [0], two, split="heldout", metrics=("rmse",))
  assert s2["points"][0]["metrics"]["rmse"]["ci"] is None


def test_paired_comparison_over_seeds_against_the_reference():
  s = _summary([1.0, 2.0, 3.0], [2.0, 2.5, 3.5])  # a - b = -1, -0.5, -0.5: a better in 3/3
  s["reference"] = "b"
  table = report.format_table(s)
  assert "a - b (paired over seeds, 95 % t-interval): w2 -0.667 [" in table
  assert "better in 3/3." in table


def _errorbars(ax):
  from matplotlib.container import ErrorbarContainer  # pylint: disable=import-outside-toplevel
  return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_sweep_plot_shows_conditions_and_error_bars_only_over_several_seeds():
  one, two = report.figure(_summary([1.0], [2.0])), report.figure(_summary([1.0, 3.0], [2.0, 2.0]))
  for fig, with_bars in ((one, False), (two, True)):
    ax, = fig.axes
    assert "lower is better" in ax.get_ylabel()
    bars = _errorbars(ax)
    assert len(bars) == 2 and all(b.has_yerr == with_bars for b in bars)
    dots = [c for c in ax.collections if c.get_offsets().shape[0] == 2]  # one per condition
    assert len(dots) == 2
  # One seed: each condition's dot is its value; two seeds: its mean over seeds.
  assert sorted(one.axes[0].collections[0].get_offsets()[:, 1]) == [0.0, 2.0]
  assert sorted(two.axes[0].collections[0].get_offsets()[:, 1]) == [1.0, 3.0]


def test_table_names_what_each_arm_is():
  s = dict(_summary([1.0], [2.0]), arms={"a": "mixflow, base gmm (this config)",
                                         "b": "mixflow, base gaussian (base.name=gaussian)"})
  table = report.format_table(s)
  assert "| point | what it is | w2 (heldout) |" in table
  assert "| b | mixflow, base gaussian (base.name=gaussian) | 2 |" in table
  assert "Best per metric: w2: a." in table

"""The report writer: summary statistics, tables and results pages."""


from flowzoo import report
from flowzoo.sweep import Point


def _summary(values_a, values_b):
  results = {("a", s): {"w2": {"heldout": {"mean": v}}} for s, v in enumerate(values_a)}
  results.update({("b", s): {"w2": {"heldout": {"mean": v}}} for s, v in enumerate(values_b)})
  return report.summarize([Point("a"), Point("b")], list(range(len(values_a))), results,
                          split="heldout", metrics=("w2",))


def test_summary_is_mean_and_population_std_over_seeds():
  s = _summary([1.0, 3.0], [2.0, 2.0])
  a, b = s["points"]
  assert a["metrics"]["w2"] == {"mean": 2.0, "std": 1.0, "values": [1.0, 3.0]}
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

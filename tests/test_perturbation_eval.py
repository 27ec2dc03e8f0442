"""One table of runs and baselines: real cells score perfectly, baselines match their module."""

import json

import numpy as np
import pytest

from flowzoo import baselines, metrics_perturbation as mp, perturbation_eval as report
from flowzoo.data import anndata_perturbations as ap
from tests.perturbation_helpers import LOAD_ARGS, write


@pytest.fixture
def data(tmp_path):
  path, _ = write(tmp_path)
  return ap.load(str(path), **dict(LOAD_ARGS, heldout=("A+B|x", "A+C|x")))


def test_scores_of_a_perfect_run_and_the_baselines(data):
  real = {n: data.gene_samples[data.index(n)] for n in ("A+B|x", "A+C|x")}
  scores = report.score(data, {"oracle": real}, n_degs=2)
  assert list(scores) == ["oracle", "baseline: control", "baseline: train_mean",
                          "baseline: additive"]  # cross_covariate: no other context has A+B
  for n in real:
    assert scores["oracle"]["rmse_mean"][n] == pytest.approx(0.0, abs=1e-12)
    assert scores["oracle"]["cosine_logfc"][n] == pytest.approx(1.0)
    assert scores["oracle"]["rmse_mean_rank"][n] == 0.0
  add = baselines.Baselines.from_data(data).predict("A+C|x", "additive")
  assert scores["baseline: additive"]["rmse_mean"]["A+C|x"] == pytest.approx(
      mp.rmse_mean(add, real["A+C|x"]))
  text = report.table(scores)
  assert text.splitlines()[0].split()[:2] == ["MMD", "gex"] and "baseline: additive" in text
  with pytest.raises(KeyError, match=r"no generated cells for heldout condition\(s\) \['A\+C\|x'\]"):
    report.score(data, {"half": {"A+B|x": real["A+B|x"]}}, n_degs=2)


def _fake_run(workdir, config, samples):
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(config))
  np.savez(workdir / "samples.npz", **samples)


def test_report_reads_runs_and_refuses_mixed_tasks(tmp_path, data):
  section = dict(name=ap.NAME, **{k: list(v) if isinstance(v, tuple) else v
                                  for k, v in data.args.items()})
  config = {"dataset": section, "method": {"name": "cfm"}, "base": {"name": "gaussian"},
            "model": {"name": "unet"}, "eval": {"guidance": 1.0}}
  samples = {f"heldout/{n}": data.gene_samples[data.index(n)] for n in ("A+B|x", "A+C|x")}
  _fake_run(tmp_path / "a", config, samples)
  text, scores = report.report([tmp_path / "a"], split="heldout", n_degs=2)
  assert "a: cfm/gaussian/unet cfg1" in text and len(scores) == 4
  other = dict(config, dataset=dict(section, heldout=["A+B|x"]))
  _fake_run(tmp_path / "b", other, samples)
  with pytest.raises(ValueError, match="must share the task"):
    report.report([tmp_path / "a", tmp_path / "b"], n_degs=2)
  with pytest.raises(FileNotFoundError, match="is missing"):
    report.report([tmp_path / "none"])


def _config(data):
  section = dict(name=ap.NAME, **{k: list(v) if isinstance(v, tuple) else v
                                  for k, v in data.args.items()})
  return {"dataset": section}


def test_after_evaluation_writes_only_perturbation_runs(tmp_path, data):
  samples = {f"heldout/{n}": data.gene_samples[data.index(n)] for n in ("A+B|x", "A+C|x")}
  assert report.after_evaluation(tmp_path, _config(data), samples) == tmp_path / "generated.h5ad"
  assert (tmp_path / "generated.h5ad").is_file()
  assert report.after_evaluation(tmp_path, {"dataset": {"name": "letters"}}, samples) is None


def test_eval_json_form_and_baseline_rows_feed_the_report_writer(data):
  """`score_run` and `add_baselines` (the `domain_eval` interface) give eval.json entries
  whose means are `score`'s, and the report writer tabulates them with a verdict."""
  from flowzoo import domain_eval, report as writer
  from flowzoo.sweep import Point
  config = _config(data)
  assert domain_eval.for_config(config) is report
  real = {n: data.gene_samples[data.index(n)] for n in ("A+B|x", "A+C|x")}
  # A run that predicts the control cells: as bad as the control baseline.
  ctrl = data.gene_samples[data.control_index[data.index("A+B|x")]]
  samples = {f"heldout/{n}": ctrl for n in real} | {"train/A|x": ctrl}
  results = {("run", 0): report.score_run(config, None, samples, ("train", "heldout"))}
  run = results["run", 0]
  assert set(run) == set(report.METRICS) and set(run["rmse_mean"]) == {"heldout"}
  direct = report.score(data, {"r": {n: ctrl for n in real}}, baselines=False)["r"]
  assert run["rmse_mean"]["heldout"]["per_condition"] == direct["rmse_mean"]
  assert run["rmse_mean"]["heldout"]["mean"] == pytest.approx(
      np.mean(list(direct["rmse_mean"].values())))
  extras = report.add_baselines(config, "heldout", results, [0])
  assert extras["names"] == ["control", "train_mean", "additive"]
  assert results["control", 0]["rmse_mean"] == run["rmse_mean"]  # same cells, same score
  summary = writer.summarize([Point("run")] + [Point(n) for n in extras["names"]], [0],
                             results, split="heldout", metrics=extras["metrics"],
                             higher=extras["higher"], baselines=extras["names"])
  assert summary["higher"] == ["deg_recall", "cosine_logfc"]
  lines = writer.verdicts(summary)
  assert any(line.startswith("run does not beat the trivial baseline") for line in lines)

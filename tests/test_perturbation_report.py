"""One table of runs and baselines: real cells score perfectly, baselines match their module."""

import json

import numpy as np
import pytest

from flowzoo import baselines, metrics_perturbation as mp, perturbation_report as report
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


def test_after_evaluation_writes_the_run_outputs(tmp_path, data):
  section = dict(name=ap.NAME, **{k: list(v) if isinstance(v, tuple) else v
                                  for k, v in data.args.items()})
  samples = {f"heldout/{n}": data.gene_samples[data.index(n)] for n in ("A+B|x", "A+C|x")}
  text = report.after_evaluation(tmp_path, {"dataset": section}, samples, n_degs=2)
  assert "baseline: additive" in text
  for f in ("generated.h5ad", "perturbench.txt", "perturbench.json"):
    assert (tmp_path / f).is_file()
  assert report.after_evaluation(tmp_path, {"dataset": {"name": "letters"}}, samples) is None

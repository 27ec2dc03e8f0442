"""The sweep runner: overrides, reuse of finished runs, mean ± std table, and the main job's path."""

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from experiments.configs import mixflow_bbbc021
from flowzoo import plots
from flowzoo import sweep as sweep_lib
from flowzoo.config import apply_overrides
from flowzoo.experiment import train_with_baselines
from tests.helpers import tiny_letters_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def test_apply_overrides_follows_cli_rules():
  c = tiny_letters_config()
  c2 = apply_overrides(c, {"model.hidden": [8], "seed": 3})
  assert c2.model.hidden == (8,) and c2.seed == 3
  assert c.model.hidden == (16, 16) and c.seed == 0  # the base config is untouched
  with pytest.raises(KeyError, match="hiden"):
    apply_overrides(c, {"model.hiden": (8,)})
  with pytest.raises(KeyError, match="nosuch"):
    apply_overrides(c, {"nosuch.x": 1})
  # Swapping a component allows its own knobs and fills in its defaults.
  g = apply_overrides(c, {"base.name": "gmm", "base.num_modes": 3})
  assert g.base.num_modes == 3 and g.base.variance == 0.01 and g.base.temperature == 0.5
  with pytest.raises(KeyError, match="does not take"):
    apply_overrides(c, {"base.name": "gmm", "base.epsilon": 0.1})
  with pytest.raises(AttributeError):
    g.new_field = 1  # still locked


def _fake_results(value):
  return {m: {"heldout": {"mean": value, "per_condition": {}}} for m in ("w1", "w2")}


def test_run_sweep_table_stats_and_reuse(tmp_path):
  calls = []

  def fake_run(config, workdir, overwrite=False, console=None):
    calls.append((config.model.hidden, config.seed))
    results = _fake_results(float(sum(config.model.hidden)) + config.seed)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "config.json").write_text(json.dumps(config.to_dict(), default=str))
    (Path(workdir) / "eval.json").write_text(json.dumps(results))
    return results

  c = tiny_letters_config(**{"eval.metrics": ("w1", "w2")})
  grid = [("big", {"model.hidden": (16, 16)}), ("small", {"model.hidden": (4,)})]
  s = sweep_lib.run_sweep(c, grid, tmp_path, seeds=(0, 1, 2), reference="small", run_fn=fake_run)
  assert len(calls) == 6
  big = s["points"][0]["metrics"]["w1"]
  assert big["values"] == [32.0, 33.0, 34.0]
  assert big["mean"] == pytest.approx(33.0) and big["std"] == pytest.approx(np.std([32, 33, 34]))
  table = (tmp_path / "sweep.md").read_text()
  assert "| big | 33 ± 0.82 | 33 ± 0.82 | +560% / +560% |" in table
  assert "| small | 5 ± 0.82" in table
  rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
  # The learned points, then the letters baselines (flowzoo/letters_eval.py).
  assert [(r["point"], r["metric"]) for r in rows] == [
      (p, m) for p in ("big", "small", "nearest_rotation", "pooled_letter") for m in ("w1", "w2")]
  assert json.loads((tmp_path / "sweep.json").read_text())["seeds"] == [0, 1, 2]
  assert (tmp_path / "sweep.png").stat().st_size > 1000
  assert (tmp_path / "small" / "seed2" / "eval.json").is_file()
  # Finished runs with the same config are reused; a changed config reruns.
  sweep_lib.run_sweep(c, grid, tmp_path, seeds=(0, 1, 2), run_fn=fake_run)
  assert len(calls) == 6
  sweep_lib.run_sweep(apply_overrides(c, {"train.steps": 12}), grid[:1], tmp_path,
                      seeds=(0,), run_fn=fake_run)
  assert len(calls) == 7


def test_points_on_different_letters_get_baselines_per_letter(tmp_path):
  def fake_run(config, workdir, overwrite=False, console=None):
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "config.json").write_text(json.dumps(config.to_dict(), default=str))
    return _fake_results(100.0)  # worse than any baseline

  c = tiny_letters_config(**{"eval.metrics": ("w1",)})
  grid = [("flow_S", {"dataset.val_letter": "S"}), ("flow_H", {"dataset.val_letter": "H"})]
  s = sweep_lib.run_sweep(c, grid, tmp_path, seeds=(0,), run_fn=fake_run)
  rows = {p["name"]: p["metrics"]["w1"]["mean"] for p in s["points"]}
  assert list(rows) == ["flow_S", "flow_H", "nearest_rotation[val_letter=S]",
                        "pooled_letter[val_letter=S]", "nearest_rotation[val_letter=H]",
                        "pooled_letter[val_letter=H]"]
  # Each set is scored on its own letter's held-out rotations.
  assert rows["pooled_letter[val_letter=S]"] != rows["pooled_letter[val_letter=H]"]
  table = (tmp_path / "sweep.md").read_text()
  assert "| pooled_letter[val_letter=H] (baseline) |" in table
  # Each point's verdict weighs it against its own letter's baselines only.
  verdict = next(line for line in table.splitlines() if line.startswith("flow_S does not beat"))
  assert "pooled_letter[val_letter=S]" in verdict and "val_letter=H" not in verdict


def test_points_of_the_configs_own_grid_run_as_arms(tmp_path, monkeypatch):
  # The config's own sweeps() define the CFM twin by swapping the base: its
  # leftover base.* settings are expected (no warning), as for baseline arms.
  from flowzoo import experiment  # pylint: disable=import-outside-toplevel
  calls = {}

  def fake_run(config, workdir, overwrite=False, console=None, **kwargs):
    calls[config.model.hidden] = kwargs
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "config.json").write_text(json.dumps(config.to_dict(), default=str))
    return _fake_results(1.0)

  monkeypatch.setattr(experiment, "train_and_evaluate", fake_run)
  c = tiny_letters_config(**{"eval.metrics": ("w1",)})
  grid = [("default", {}), ("swapped", {"model.hidden": (4,)})]
  sweep_lib.run_sweep(c, grid, tmp_path / "a", config_grid=True)
  assert calls == {(16, 16): {}, (4,): {"arm": True}}
  sweep_lib.run_sweep(c, grid, tmp_path / "b")  # a grid given by the caller: warnings stay
  assert calls == {(16, 16): {}, (4,): {}}


def test_points_differing_only_in_evaluation_are_trained_once(tmp_path, capsys):
  """letters' `val_letter` is evaluation-only: the H point evaluates the S point's training."""
  from flowzoo.experiment import train_and_evaluate  # pylint: disable=import-outside-toplevel
  c = tiny_letters_config()
  grid = [("S", {"dataset.val_letter": "S"}), ("H", {"dataset.val_letter": "H"})]
  sweep_lib.run_sweep(c, grid, tmp_path / "sweep", seeds=(0,))
  out = capsys.readouterr().out
  assert "[run 2/2 (H seed 0)] trains exactly as S" in out and "evaluating only" in out
  s_dir, h_dir = tmp_path / "sweep" / "S" / "seed0", tmp_path / "sweep" / "H" / "seed0"
  assert (h_dir / "train_metrics.jsonl").read_text() == (s_dir / "train_metrics.jsonl").read_text()
  assert json.loads((h_dir / "config.json").read_text())["dataset"]["val_letter"] == "H"
  shared = json.loads((h_dir / "eval.json").read_text())
  assert sorted(shared["w2"]["heldout"]["per_condition"]) == ["H_r01", "H_r03"]
  # The same numbers as training the H point from scratch.
  direct = train_and_evaluate(apply_overrides(c, {"dataset.val_letter": "H"}),
                              tmp_path / "direct")
  for m in ("w1", "w2", "mmd", "energy"):
    assert shared[m]["heldout"]["mean"] == pytest.approx(direct[m]["heldout"]["mean"], rel=1e-6)
  # A point that changes training has no twin, whatever its val_letter.
  wider = apply_overrides(c, {"dataset.val_letter": "H", "model.hidden": (8, 8)})
  earlier = [(sweep_lib.Point("S"), apply_overrides(c, {}), s_dir)]
  assert sweep_lib._trained_twin(wider, tmp_path / "new", earlier) is None
  other_saves = apply_overrides(c, {"dataset.val_letter": "H", "train.ckpt_every": 8})
  assert sweep_lib._trained_twin(other_saves, tmp_path / "new", earlier) is None
  same = apply_overrides(c, {"dataset.val_letter": "H", "eval.num_steps": 2})
  assert sweep_lib._trained_twin(same, tmp_path / "new", earlier).name == "S"


def test_run_sweep_rejects_bad_grids(tmp_path):
  c = tiny_letters_config()
  with pytest.raises(ValueError, match="unique"):
    sweep_lib.run_sweep(c, [("a", {}), ("a", {})], tmp_path)
  with pytest.raises(KeyError, match="hiden"):  # before any training
    sweep_lib.run_sweep(c, [("a", {}), ("b", {"model.hiden": 1})], tmp_path)
  with pytest.raises(ValueError, match=r"sweep point 'b' \(seed 0\): .*ema_decay must be in"):
    sweep_lib.run_sweep(c, [("a", {}), ("b", {"train.ema_decay": 1.0})], tmp_path)
  with pytest.raises(ValueError, match="reference"):
    sweep_lib.run_sweep(c, [("a", {})], tmp_path, reference="cfm")
  with pytest.raises(ValueError, match=r"sweep point 'a' .*split 'train' is not evaluated"):
    sweep_lib.run_sweep(c, [("a", {})], tmp_path, split="train")  # a table of nan
  with pytest.raises(ValueError, match="file name"):
    sweep_lib.run_sweep(c, [("a/b", {})], tmp_path)
  assert not any(tmp_path.iterdir())


def test_main_job_trains_its_declared_baseline_beside_it(tmp_path, capsys, caplog):
  """`experiments.run --config=mixflow_bbbc021.py`: MixFlow and its CFM twin, one table."""
  config = apply_overrides(mixflow_bbbc021.get_config("sim_runlocal"), {
      "baselines.cellflux": "", "dataset.dim": 4, "dataset.cells_per_population": 32, "dataset.control_cells_per_plate": 8,
      "model.hidden": (16, 16), "model.cond_embed": 8, "base.hidden": (8,), "base.num_modes": 3,
      "data.batch_size": 16, "train.steps": 4, "train.steps_per_dispatch": 2,
      "train.log_every": 2, "train.ckpt_every": 4, "eval.num_steps": 4})
  with caplog.at_level(logging.WARNING):
    results = train_with_baselines(config, tmp_path, label="mixflow")
  # The arm the config defines swaps its base: the parent's gmm and base-optimizer
  # settings are expected there, not warned about.
  assert "ignores" not in caplog.text and "no parameter group" not in caplog.text, caplog.text
  out = capsys.readouterr().out
  assert "[run 1/2 (mixflow)] mixflow, base gmm, coupling exact, model mlp (this config)" in out
  assert "[run 2/2 (cfm_ot_twin)] mixflow, base gaussian, coupling exact, model mlp " \
         "(base.name=gaussian)" in out
  assert re.search(r"^\[run 2/2 \(cfm_ot_twin\)\] \[\s+4/4\] loss=", out, re.M)
  assert "| mixflow | mixflow, base gmm" in out and "| cfm_ot_twin | mixflow, base gaussian" in out
  assert list(results) == ["mixflow", "cfm_ot_twin"]
  # Vector data (4-d cells): a PCA figure of real vs generated per held-out compound.
  heldout = sorted(results["mixflow"]["w1"]["heldout"]["per_condition"])
  for rdir in (tmp_path, tmp_path / "baselines" / "cfm_ot_twin"):
    pngs = sorted(p.name for p in rdir.glob("heldout_pca_*.png"))
    assert pngs == sorted(f"heldout_pca_{plots.file_safe(c)}.png" for c in heldout), pngs
    assert (rdir / "heldout_metrics.png").is_file()
  table = (tmp_path / "comparison.md").read_text()
  assert "| mixflow |" in table and "| cfm_ot_twin |" in table
  for point, rdir in (("mixflow", tmp_path), ("cfm_ot_twin", tmp_path / "baselines" / "cfm_ot_twin")):
    cfg = json.loads((rdir / "config.json").read_text())
    assert cfg["base"]["name"] == ("gmm" if point == "mixflow" else "gaussian")
    assert cfg["baselines"] == ({} if point == "cfm_ot_twin" else
                                {"cfm_ot_twin": "base.name=gaussian", "cellflux": ""})
    ev = json.loads((rdir / "eval.json").read_text())
    assert sorted(ev["w1"]["heldout"]["per_condition"]) == sorted(
        ["AZ841", "cyclohexamide", "cytochalasin D", "docetaxel", "epothilone B", "lactacystin",
         "latrunculin B", "simvastatin"])
    assert all(np.isfinite(ev[m]["heldout"]["mean"]) for m in ("mmd", "w1", "w2", "energy"))
  # A second run reuses both finished runs (nothing retrained: same eval.json).
  again = train_with_baselines(config, tmp_path, label="mixflow")
  assert again == results
  with pytest.raises(ValueError, match=r"config.baselines.cfm_ot_twin = 'model.hiden=3'.*hiden"):
    train_with_baselines(apply_overrides(config, {"baselines.cfm_ot_twin": "model.hiden=3"}),
                         tmp_path)

"""End to end: the CLI run writes every output, resumes, and rejects bad input early."""

import copy
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from flowzoo.checkpoint import Checkpointer
from flowzoo.config import apply_overrides, config_diff, optimizer_kwargs, resolved
from flowzoo.experiment import restore_or_init, setup, train_and_evaluate
from tests.helpers import tiny_letters_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  results = train_and_evaluate(tiny_letters_config(), workdir)
  return workdir, results


def test_run_writes_every_output(finished_run):
  workdir, results = finished_run
  for name in ("config.json", "train_metrics.jsonl", "eval.json", "samples.npz",
               "heldout_real_vs_generated.png", "heldout_flow.png"):
    assert (workdir / name).is_file(), name
  assert any((workdir / "tensorboard").iterdir())
  assert (workdir / "checkpoints" / "8").is_dir()
  rows = [json.loads(l) for l in (workdir / "train_metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [4, 8]
  assert {"loss", "grad_norm", "param_norm", "steps_per_s"} <= set(rows[0])
  ev = json.loads((workdir / "eval.json").read_text())
  assert set(ev) == {"w1", "w2", "mmd", "energy"}
  heldout = ev["w2"]["heldout"]
  assert sorted(heldout["per_condition"]) == ["S_r01", "S_r03"]
  assert heldout["mean"] == pytest.approx(np.mean(list(heldout["per_condition"].values())))
  samples = np.load(workdir / "samples.npz")
  assert samples["heldout/S_r01"].shape == (64, 2)  # as many as the real population


def test_best_checkpoint_by_heldout_w2_is_the_one_evaluated(finished_run):
  # MixFlow §5.1: metrics at the checkpoint with the best validation W2.
  workdir, results = finished_run
  sel = json.loads((workdir / "selection.json").read_text())
  assert sel["select"] == "heldout/w2" and sorted(sel["scores"]) == ["4", "8"]
  scores = {int(k): v for k, v in sel["scores"].items()}
  assert scores[4] != scores[8]
  assert sel["selected_step"] == min(scores, key=scores.get)
  # Same key and subsample as the final evaluation: the reported W2 is the score.
  assert results["w2"]["heldout"]["mean"] == pytest.approx(min(scores.values()), rel=1e-6)


def test_fixed_number_of_generated_samples_per_condition():
  from flowzoo import evaluate as eval_lib
  exp = setup(tiny_letters_config())
  state = exp.init()
  kw = dict(splits=("heldout",), num_steps=2, metric_names=("w2",), chunk=128)
  results, samples = eval_lib.evaluate(exp.method, state.ema, exp.pops, jax.random.key(0),
                                       samples_per_condition=40, **kw)
  assert {k: v.shape for k, v in samples.items()} == {"heldout/S_r01": (40, 2),
                                                      "heldout/S_r03": (40, 2)}
  assert np.isfinite(results["w2"]["heldout"]["mean"])
  with pytest.raises(ValueError, match="samples_per_condition must be >= 0"):
    eval_lib.evaluate(exp.method, state.ema, exp.pops, jax.random.key(0),
                      samples_per_condition=-1, **kw)


def test_python_api_rejects_bad_arguments_before_running(tmp_path):
  exp = setup(tiny_letters_config())  # steps_per_dispatch 4
  with pytest.raises(ValueError, match=r"num_steps=3 must be a positive multiple of .*=4"):
    exp.train(None, 3)  # would have run 0 steps
  with pytest.raises(KeyError, match=r"unknown condition 'S_r99'; did you mean \['S_r0"):
    exp.generate(None, "S_r99", 8)
  with pytest.raises(IndexError, match=rf"condition index -1 not in \[0, {len(exp.pops.names)}\)"):
    exp.generate(None, -1, 8)  # would have picked the last condition
  with pytest.raises(ValueError, match=r"num must be >= 1, got 0"):
    exp.generate(None, "S_r00", 0)
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
    Checkpointer(not_a_dir, {})


def test_second_run_reuses_its_evaluation_or_reevaluates(finished_run, capsys):
  workdir, results = finished_run
  (workdir / "eval.json").write_text(json.dumps(dict(results, marker={})))
  again = train_and_evaluate(tiny_letters_config(), workdir)
  assert "marker" in again  # eval.json as written, nothing scored again
  assert "reusing its eval.json" in capsys.readouterr().out
  # An evaluation setting changed: restored and evaluated, not retrained.
  other = train_and_evaluate(tiny_letters_config(**{"eval.metrics": ("w2",)}), workdir)
  out = capsys.readouterr().out
  assert "resuming from checkpoint at step 8" in out and "evaluating only" in out
  assert list(other) == ["w2"]
  forced = train_and_evaluate(tiny_letters_config(), workdir, reevaluate=True)
  assert "evaluating only" in capsys.readouterr().out and "marker" not in forced
  assert forced["w2"]["heldout"]["mean"] == pytest.approx(results["w2"]["heldout"]["mean"])


def test_resumed_run_matches_uninterrupted(tmp_path):
  config = tiny_letters_config()
  full = setup(config)
  uninterrupted, _ = full.train(full.init(), 8)
  # Interrupted after 4 steps: checkpoint, then a fresh process-like restore.
  first = setup(config)
  state, _ = first.train(first.init(), 4)
  ckpt = Checkpointer(tmp_path, config.to_dict())
  ckpt.save(4, state)
  ckpt.close()
  second = setup(config)
  restored = restore_or_init(second, Checkpointer(tmp_path, config.to_dict()))
  assert int(restored.step) == 4
  resumed, _ = second.train(restored, 4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               jax.device_get(uninterrupted), jax.device_get(resumed))


def test_workdir_of_a_different_config_is_refused(finished_run, tmp_path):
  workdir, _ = finished_run
  other = tiny_letters_config(**{"model.hidden": (8, 8)})
  with pytest.raises(ValueError, match=r"different config \(differs in: model.hidden\).*--overwrite"):
    train_and_evaluate(other, workdir)


def test_optimizer_overrides_per_group_inherit_unset_fields(caplog):
  from experiments.configs import mixflow_letters  # pylint: disable=import-outside-toplevel
  c = apply_overrides(mixflow_letters.get_config("runlocal"),
                      {"optim_overrides.base.lr": 3e-4, "optim.lr": 2e-3})
  base, velocity = optimizer_kwargs(c, "base"), optimizer_kwargs(c, "velocity")
  assert (base["lr"], base["b1"], base["b2"]) == (3e-4, 0.9, 0.999)  # set in the group
  assert base["schedule"] == velocity["schedule"] == c.optim.schedule  # unset: inherited
  assert (velocity["lr"], velocity["b1"], velocity["b2"]) == (2e-3, 0.0, 0.99)
  bad = tiny_letters_config()
  with bad.unlocked():
    bad.optim_overrides.base = {"lr": 1e-4}  # CFM has no base parameters to optimise
  setup(bad)  # e.g. MixFlow with base.name=gaussian: warned about, not refused
  assert "method 'cfm' has no parameter group(s) ['base']" in caplog.text


def test_exact_coupling_solves_only_the_population_blocks_of_the_batch_layout():
  # sample_batch lays 4 populations of 4 rows out contiguously: the exact
  # coupling gets group_size 4 (only the diagonal blocks); one population per
  # batch, or an explicit group_size, keeps the config's choice.
  def coupling(**overrides):
    c = apply_overrides(tiny_letters_config(), {"coupling.name": "exact",
                                                "method.group_coupling": True, **overrides})
    return setup(c).method.coupling
  assert coupling(**{"data.populations_per_batch": 4}).group_size == 4
  assert coupling().group_size == 16  # populations_per_batch 1: one block, the whole batch
  assert coupling(**{"data.populations_per_batch": 16}).group_size is None  # one row each
  assert coupling(**{"data.populations_per_batch": 4, "coupling.group_size": 2}).group_size == 2


@pytest.mark.parametrize("override, error, match", [
    ({"model.name": "mlpp"}, KeyError, r"Unknown model 'mlpp'.*Valid model names.*: mlp \(flowzoo.models.mlp\)"),
    ({"dataset.name": "letter"}, KeyError, r"Unknown dataset 'letter'.*Did you mean 'letters'"),
    ({"train.log_every": 3}, ValueError, r"log_every=3 must be a multiple of"),
    ({"data.populations_per_batch": 3}, ValueError,
     r"batch_size=16 is not a multiple of populations_per_batch=3"),
    ({"dataset.val_letter": "Q"}, ValueError, r"val_letter"),
    ({"eval.samples_per_condition": -5}, ValueError, r"samples_per_condition must be >= 0"),
    ({"eval.select": "heldout"}, ValueError, r"eval.select must be 'split/metric'"),
    ({"eval.select": "validation/w2"}, ValueError, r"has no 'validation' split"),
    ({"eval.select": "heldout/w3"}, KeyError, r"unknown metric 'w3'; valid: \['energy'"),
    ({"train.keep_checkpoints": 1}, ValueError, r"keeps only the last 1 of the 2 saved"),
    # Each of these used to fail deep inside jit, after training, or not at all.
    ({"data.batch_size": 0}, ValueError, r"data.batch_size must be >= 1, got 0"),
    ({"data.populations_per_batch": 0}, ValueError, r"populations_per_batch must be >= 1"),
    ({"train.steps_per_dispatch": 0}, ValueError, r"steps_per_dispatch must be >= 1"),
    ({"train.keep_checkpoints": 0}, ValueError, r"keep_checkpoints must be >= 1"),
    ({"train.ema_decay": 1.5}, ValueError, r"ema_decay must be in \[0, 1\), got 1.5"),
    ({"eval.num_steps": 0}, ValueError, r"eval.num_steps must be >= 1"),
    ({"eval.max_samples": 0}, ValueError, r"eval.max_samples must be >= 1"),
    ({"eval.chunk": 0}, ValueError, r"eval.chunk must be >= 1"),
    ({"eval.metrics": ("w1", "wasserstein")}, KeyError,
     r"eval.metrics: unknown metric\(s\) \['wasserstein'\]; valid: \['energy'"),
    ({"eval.solver": "rk45"}, KeyError, r"Unknown solver 'rk45'.*Valid solver names.*:.*euler"),
    ({"eval.splits": ("train", "helduot")}, ValueError, r"unknown split\(s\) \['helduot'\]"),
    ({"eval.splits": ("validation",)}, ValueError, r"has none of them \(it has \['heldout'"),
    ({"optim.grad_clip": -1.0}, ValueError, r"group 'velocity'.*grad_clip must be >= 0"),
    ({"optim.warmup_steps": -5}, ValueError, r"warmup_steps must be >= 0"),
    ({"model.hidden": (-4,)}, ValueError, r"mlp: hidden widths must be >= 1, got \(-4,\)"),
    ({"model.dropout": 1.5}, ValueError, r"mlp: dropout must be in \[0, 1\), got 1.5"),
])
def test_bad_config_fails_before_compiling(override, error, match):
  with pytest.raises(error, match=match):
    setup(tiny_letters_config(**override))


def test_cli_resolves_bare_config_name_and_rejects_unknown_field(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.run", "--config=cfm_letters.py:runlocal",
       f"--workdir={tmp_path}", "--config.model.hiden=3"],
      capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "hiden" in out.stderr  # the config file was found; the field was not
  assert "No such file" not in out.stderr


def test_model_output_not_matching_data_is_rejected():
  import flax.linen as nn
  from flowzoo.registry import MODELS

  class ThreeOut(nn.Module):
    @nn.compact
    def __call__(self, t, x_t, cond=None, *, mask=None, train=False):
      return nn.Dense(3)(x_t)

  with MODELS.temporary("three_out", ThreeOut):
    with pytest.raises(ValueError, match=r"output shape \(3,\) != data event shape \(2,\)"):
      setup(tiny_letters_config(**{"model.name": "three_out"}))


def test_results_table_keeps_long_metric_names_apart():
  from flowzoo.evaluate import results_table
  res = {m: {"train": {"mean": v}} for m, v in (("bw_min_w2", 0.028), ("bw_min_w2_cov", 0.0022))}
  header, row = results_table(res).splitlines()
  assert header.split() == ["split", "bw_min_w2", "bw_min_w2_cov"]
  assert [float(v) for v in row.split()[1:]] == [0.028, 0.0022]


def test_component_swap_stores_one_config_however_spelled():
  """`--config.base.name=gmm` (CLI: no knobs written) and a sweep point store the same config."""
  c = tiny_letters_config()
  cli = copy.deepcopy(c)
  cli.base.name = "gmm"  # what absl's override does to the locked config
  swept = apply_overrides(c, {"base.name": "gmm"})
  assert "num_modes" not in cli.base and cli.to_dict() != swept.to_dict()
  assert resolved(cli).to_dict() == swept.to_dict()
  assert "num_modes" not in cli.base  # the caller's config is untouched


def test_baselines_section_does_not_block_resuming():
  """Adding a learned baseline arm to a finished run trains nothing new for the run itself."""
  old = {"seed": 0, "baselines": {}, "model": {"hidden": [8]}}
  assert config_diff(old, dict(old, baselines={"cfm_ot_twin": "base.name=gaussian"})) == []
  assert config_diff(old, dict(old, seed=1)) == ["seed"]


def test_guard_names_fields_missing_from_an_older_run(tmp_path):
  """A run stored before a field existed is refused when the field is not at its default
  (it may change what is trained), and the message says the field is new."""
  config = tiny_letters_config()
  with config.unlocked():
    config.model.act = "relu"  # not the MLP's default
  stored = json.loads(json.dumps(config.to_dict(), default=str))
  del stored["eval"]["select"], stored["model"]["act"]
  stored["model"]["retired_knob"] = 1
  (tmp_path / "config.json").write_text(json.dumps(stored))
  (tmp_path / "checkpoints" / "8").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"differs in: model.act \(not in the stored config\), "
                                       r"model.retired_knob \(only in the stored config\)\)"):
    Checkpointer(tmp_path, config.to_dict())


def test_a_new_component_field_at_its_default_does_not_block_an_older_run():
  """A field added to a component after a run was stored (at its default, the behaviour the
  run had) still lets the run resume and be reused; a non-default value or a retired field
  does not, and neither does a missing field outside the component sections."""
  config = resolved(tiny_letters_config())
  new = json.loads(json.dumps(config.to_dict(), default=str))
  assert new["model"]["name"] == "mlp"
  new["model"].update(input_frequencies=0, input_max_frequency=1.0)  # the MLP's defaults
  old = copy.deepcopy(new)
  del old["model"]["input_frequencies"], old["model"]["input_max_frequency"]
  assert config_diff(old, new) == []
  changed = copy.deepcopy(new)
  changed["model"]["input_frequencies"] = 5
  assert config_diff(old, changed) == ["model.input_frequencies"]
  old_train = copy.deepcopy(new)
  del old_train["train"]["ema_decay"]  # not a component field: no default to fall back on
  assert config_diff(old_train, new) == ["train.ema_decay"]
  assert config_diff(new, old) == ["model.input_frequencies", "model.input_max_frequency"]


def test_overwrite_discards_the_old_runs_outputs(tmp_path):
  """--overwrite leaves no file mixing two runs; files that are not run outputs stay."""
  from flowzoo.experiment import RUN_OUTPUTS  # pylint: disable=import-outside-toplevel
  config = tiny_letters_config()
  old = dict(json.loads(json.dumps(config.to_dict(), default=str)), seed=123)
  (tmp_path / "config.json").write_text(json.dumps(old))
  (tmp_path / "checkpoints" / "8").mkdir(parents=True)
  (tmp_path / "tensorboard").mkdir()
  (tmp_path / "tensorboard" / "events.out").write_text("old")
  for name in ("train_metrics.jsonl", "eval.json", "samples.npz", "heldout_flow.png",
               "notes.txt"):
    (tmp_path / name).write_text("old")
  Checkpointer(tmp_path, config.to_dict(), overwrite=True, outputs=RUN_OUTPUTS).close()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "config.json",
                                                        "notes.txt"]
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == config.seed


def test_resumed_metrics_drop_rows_after_the_checkpoint(tmp_path):
  """An interrupted run logged step 12 after its last checkpoint (8): resuming logs it again."""
  from flowzoo.writers import MetricWriter  # pylint: disable=import-outside-toplevel
  writer = MetricWriter(tmp_path)
  for step in (4, 8, 12):
    writer.write(step, {"loss": float(step)})
  writer.close()
  writer = MetricWriter(tmp_path, start_step=8)
  writer.write(12, {"loss": -1.0})
  writer.close()
  rows = [json.loads(r) for r in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(4, 4.0), (8, 8.0), (12, -1.0)]


def test_guard_explains_why_more_steps_is_a_new_run(tmp_path):
  config = tiny_letters_config()
  stored = json.loads(json.dumps(config.to_dict(), default=str))
  stored["train"]["steps"] = 4
  (tmp_path / "config.json").write_text(json.dumps(stored))
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"differs in: train.steps\).*a longer run is a new run"):
    Checkpointer(tmp_path, config.to_dict())

"""Every experiment config builds and trains; the MixFlow configs' baseline rule and real-data run.

Each config's `runlocal` variant is shrunk (tiny network, batch, data and
2 dispatches of 2 steps) so that the file stays well under 90 s on 2 cores.
"""

import importlib.util
import json

import jax
import numpy as np
import pytest
from absl import flags

from experiments import cli

from flowzoo.bases.gaussian import Gaussian
from flowzoo.bases.mixture import GMM
from flowzoo.experiment import setup, train_with_baselines
from flowzoo.methods.mixflow import MixFlow
from flowzoo import sweep as sweep_lib
from flowzoo.config import apply_overrides, optimizer_kwargs
from tests.helpers import write_crops

CONFIG_DIR = cli.CONFIG_DIR
CONFIGS = cli.bundled_configs()  # shared set-up modules (`*common.py`) are not configs

# Applied where the config has the field: seconds instead of minutes.
TINY = {
    "train.steps": 4, "train.steps_per_dispatch": 2, "train.log_every": 2,
    "train.ckpt_every": 4, "data.batch_size": 16,
    "model.hidden": (16, 16), "model.cond_embed": 8, "model.width": 16, "model.mlp_dim": 16,
    "model.num_blocks": 1, "base.hidden": (8,), "model.channel_mult": (1,), "model.emb_dim": 16,
    "dataset.letters": "SH", "dataset.num_rotations": 4, "dataset.copies": 1,
    "dataset.points_per_copy": 32, "dataset.cells_per_population": 32, "dataset.dim": 4,
    "dataset.control_cells_per_plate": 8, "eval.num_steps": 4, "eval.max_samples": 64,
}


def tiny(config, **extra):
  """`config` with the TINY overrides that apply to it (plus `extra`)."""
  over = {k: v for k, v in TINY.items() if _has(config, k)}
  if _has(config, "data.populations_per_batch") and config.data.populations_per_batch > 16:
    over["data.populations_per_batch"] = 16
  if _has(config, "base.num_modes") and config.base.means == "free":
    over["base.num_modes"] = 4  # SH x 4 rotations: 4 training conditions.
  return apply_overrides(config, dict(over, **extra))


def _has(config, key):
  node = config
  for p in key.split("."):
    if p not in node:
      return False
    node = node[p]
  return True


def _config(name, variant="runlocal", argv=()):
  """The config as the CLI parses it (locked; `argv` are `--config.a.b=v` overrides)."""
  argv = ["prog", f"--config={CONFIG_DIR / name}:{variant}", *argv]
  fv = flags.FlagValues()
  # sys_argv: override flags are declared from the argv, as in experiments.run.
  cli.define_config_flag(flag_values=fv, sys_argv=argv)
  fv(argv)
  return fv.config


@pytest.mark.parametrize("name", CONFIGS)
def test_runlocal_builds_and_trains(name, tmp_path):
  if name == "bwfm_pbmc.py" and importlib.util.find_spec("scanpy") is None:
    pytest.skip("bwfm_pbmc reads scanpy's bundled pbmc68k_reduced: pip install -e '.[scanpy]'")
  extra = {}
  if _has(_config(name), "dataset.data_dir"):  # image crops: synthetic ones, converted in tmp
    extra = {"dataset.path": str(write_crops(tmp_path, per_group=3)),
             "dataset.data_dir": str(tmp_path / "tfds"), "dataset.image_size": 0}
  exp = setup(tiny(_config(name), **extra))
  state = exp.init()
  before = jax.tree.map(np.asarray, state.params)
  state, logs = exp.train(state, 4)
  assert int(state.step) == 4
  assert logs["loss"].shape == (4,) and np.all(np.isfinite(logs["loss"]))
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), before,
                                       jax.tree.map(np.asarray, state.params)))
  assert any(moved)


# Each method config's `:paper` preset and its CPU twin (primeflow_perturbench's
# CPU sizes already keep its paper recipe: tests/test_perturbench_configs.py).
PAPER_TWINS = {
    "mixflow_letters.py": ("paper", "paper_runlocal"),
    "mixflow_bbbc021.py": ("paper", "paper_runlocal"),
    "cellflux_bbbc021.py": ("paper", "paper_runlocal"),
    "bwfm_spiral.py": ("paper", "paper,runlocal"),
    "bwfm_pbmc.py": ("paper", "paper,runlocal"),
    "wfm_digits.py": ("paper", "paper_runlocal"),
    "mixflow_perturbench.py": ("paper", "paper_runlocal"),
}


@pytest.mark.parametrize("name", sorted(PAPER_TWINS))
def test_paper_runlocal_builds_and_trains(name):
  """The `:paper` preset parses; its runlocal twin trains (tiny, as above) and keeps its recipe."""
  if name == "bwfm_pbmc.py" and importlib.util.find_spec("scanpy") is None:
    pytest.skip("bwfm_pbmc reads scanpy's bundled pbmc68k_reduced: pip install -e '.[scanpy]'")
  paper_variant, twin_variant = PAPER_TWINS[name]
  paper, twin = _config(name, paper_variant), _config(name, twin_variant)
  for section in ("method", "base", "coupling"):  # (letters: one mode per training condition)
    a, b = twin[section].to_dict(), paper[section].to_dict()
    assert {k: v for k, v in a.items() if k != "num_modes"} == {
        k: v for k, v in b.items() if k != "num_modes"}, section
  assert (twin.optim.schedule, twin.train.ema_decay) == (paper.optim.schedule, paper.train.ema_decay)
  exp = setup(tiny(twin))
  state, logs = exp.train(exp.init(), 4)
  assert int(state.step) == 4 and np.all(np.isfinite(logs["loss"]))


def test_cfm_paper_baseline_twin_never_trains_its_condition_encoder():
  """The reference's CFM baseline (MixFlow letters sweep point): the encoder stays at its init."""
  grid = dict(sweep_lib.sweeps_from_file(CONFIG_DIR / "mixflow_letters.py:paper_runlocal")[
      "paper_baseline"])
  exp = setup(tiny(_config("mixflow_letters.py", "paper_runlocal"), **grid["cfm_paper_baseline_S"]))
  assert exp.method.groups == ("velocity",) and exp.method.cond_encoder is not None
  state = exp.init()
  before = jax.tree.map(np.asarray, state.params)
  state, _ = exp.train(state, 4)
  after = jax.tree.map(np.asarray, state.params)
  assert jax.tree.all(jax.tree.map(np.array_equal, before["cond_encoder"], after["cond_encoder"]))
  assert not jax.tree.all(jax.tree.map(np.array_equal, before["velocity"], after["velocity"]))


def test_paper_presets_hold_the_reference_settings():
  from experiments.configs import (bwfm_spiral, cellflux_bbbc021, mixflow_bbbc021,  # pylint: disable=g-import-not-at-top
                                   mixflow_letters, wfm_digits)
  for mix in (mixflow_letters.get_config("paper"), mixflow_bbbc021.get_config("paper")):
    assert (mix.base.variance, mix.base.straight_through, mix.base.dropout) == (0.01, False, 0.0)
    assert (mix.train.ema_decay, mix.optim.schedule) == (0.0, "constant")
    m = mix.method
    assert (m.warmup, m.alternating, m.cooldown, m.base_every, m.base_step_rule) == (
        0.1, 0.8, 0.1, 10, "step_mod_k")
  twin = mixflow_bbbc021.get_config("paper").baselines.cfm_paper_baseline
  assert "method.cond_encoder='paper_baseline'" in twin and "base.name=gaussian" in twin
  flux = cellflux_bbbc021.get_config("paper")
  assert (flux.method.decide_per, flux.method.time_sampling, flux.method.inference_noise) == (
      "batch", "skewed", 1.0)
  assert (flux.eval.solver, flux.eval.num_steps, flux.eval.guidance) == ("heun", 50, 1.2)
  assert cellflux_bbbc021.get_config("").method.decide_per == "sample"  # default: Algorithm 1
  bw = bwfm_spiral.get_config("spiral16,paper")
  assert tuple(bw.model.hidden) == (1024,) * 6 and bw.model.residual and bw.model.layer_norm
  assert bw.method.projection == "every_step" and bw.method.separate_networks
  assert (bw.optim.schedule, bw.optim.decay_rate, bw.optim.decay_steps) == ("exponential", 0.97, 1000)
  assert bw.train.steps == 100_000
  for ot in (bw.coupling, wfm_digits.get_config("paper").method):
    assert (ot.epsilon, ot.max_iterations, ot.scale_cost) == (0.002, 200, "max")
  for bad in (lambda: mixflow_letters.get_config("paper_sim"),
              lambda: mixflow_bbbc021.get_config("paper_sim"),
              lambda: bwfm_spiral.get_config("paper,paper"), lambda: wfm_digits.get_config("papr")):
    with pytest.raises(ValueError, match="variant"):
      bad()


@pytest.mark.parametrize("name", ["mixflow_letters.py", "mixflow_bbbc021.py"])
def test_base_gaussian_from_the_cli_is_vanilla_cfm(name):
  mix = setup(tiny(_config(name)))
  cfm = setup(tiny(_config(name, argv=["--config.base.name=gaussian"])))
  assert isinstance(mix.method, MixFlow) and isinstance(mix.method.base, GMM)
  assert mix.method.groups == ("velocity", "base")
  assert isinstance(cfm.method.base, Gaussian) and cfm.method.groups == ("velocity",)
  # No base steps at all, and every step updates the velocity field.
  steps = np.arange(cfm.config.train.steps)
  assert not np.any(np.asarray(cfm.method.is_base_step(steps)))
  assert bool(cfm.method.active(np.int32(2))["velocity"])
  # Everything else is identical: same network, coupling, optimizer, schedule.
  a, b = mix.config.to_dict(), cfm.config.to_dict()
  assert {k: v for k, v in a.items() if k != "base"} == {k: v for k, v in b.items() if k != "base"}


def test_cli_swap_accepts_the_new_components_own_fields():
  # The file holds only the MLP's fields; the swap comes first, so the U-Net's
  # own knobs (and its defaults) are settable on the same command line.
  c = _config("mixflow_bbbc021.py", argv=["--config.model.base_channels=8",
                                          "--config.model.name=unet",
                                          "--config.coupling.name", "sinkhorn",
                                          "--config.coupling.epsilon=0.05"])
  assert c.model.name == "unet" and c.model.base_channels == 8
  assert tuple(c.model.channel_mult) == (1, 2, 2)  # UNet default written in
  assert c.coupling.name == "sinkhorn" and c.coupling.epsilon == 0.05
  with pytest.raises(flags.IllegalFlagValueError, match="no field .base_channel."):  # typos fail
    _config("mixflow_bbbc021.py", argv=["--config.model.name=unet",
                                        "--config.model.base_channel=8"])
  with pytest.raises(flags.IllegalFlagValueError, match="Unknown model 'unett'.*unet"):
    _config("mixflow_bbbc021.py", argv=["--config.model.name=unett"])


def test_cli_optimizer_overrides_for_every_group():
  c = _config("cfm_letters.py", argv=["--config.optim_overrides.velocity.lr=3e-4"])
  assert optimizer_kwargs(c, "velocity")["lr"] == 3e-4
  assert optimizer_kwargs(c, "velocity")["b1"] == c.optim.b1  # unset fields inherit
  c = _config("mixflow_letters.py", argv=["--config.optim_overrides.velocity.lr=3e-4"])
  assert optimizer_kwargs(c, "velocity")["lr"] == 3e-4
  assert optimizer_kwargs(c, "base")["lr"] == c.optim_overrides.base.lr != 3e-4


@pytest.mark.parametrize("variant", ["", "runlocal", "cellflux_split", "sim", "sim_runlocal",
                                     "pca"])
def test_bbbc021_variants(variant):
  from experiments.configs import cellflux_bbbc021, cfm_bbbc021, mixflow_bbbc021
  mix, cfm = mixflow_bbbc021.get_config(variant), cfm_bbbc021.get_config(variant)
  assert set(mix.baselines) == {"cfm_ot_twin", "cellflux"} and not cfm.baselines
  assert mix.base.name == "gmm" and cfm.base.name == "gaussian"
  real = variant in ("", "runlocal", "cellflux_split")
  assert mix.dataset.name == ("bbbc021_wells" if real else "bbbc021_sim")
  assert mix.dataset.split == ("impa" if variant in ("", "runlocal") else "cellflux")
  # The real data: shipped with the package (no path), a validation split, same-plate pairing.
  if real:
    assert mix.dataset.path == "" and mix.dataset.num_validation > 0
    assert mix.dataset.pairing == "same_plate" and "validation" in mix.eval.splits
  # Both methods are scored on a fixed number of generated cells, never just
  # the real count.
  want = 200 if real else 500 if variant == "sim_runlocal" else mix.eval.max_samples
  assert mix.eval.samples_per_condition == cfm.eval.samples_per_condition == want
  arm = apply_overrides(mix, cellflux_bbbc021.overrides())
  flux = cellflux_bbbc021.get_config(variant)
  for section in ("method", "coupling"):  # (the arm keeps MixFlow's unused knobs beside them)
    assert {k: arm[section][k] for k in flux[section]} == flux[section].to_dict()
  assert arm.base.name == flux.base.name == "empirical" and arm.eval.guidance == 1.2
  names = [n for n, _ in mixflow_bbbc021.sweeps()["baseline"]]
  assert names == ["mixflow", "cfm_ot_twin"]
  with pytest.raises(ValueError, match="unknown variant"):
    mixflow_bbbc021.get_config("nope")


# The variant each named grid is meant for (README commands); "runlocal" otherwise.
SWEEP_VARIANTS = {("mixflow_bbbc021.py", "pca_dim"): "pca"}


@pytest.mark.parametrize("name", [n for n in CONFIGS if "def sweeps" in (CONFIG_DIR / n).read_text()])
def test_every_named_sweep_point_is_a_valid_config(name):
  """A mistyped key or bad value in a grid fails here, not hours into a sweep."""
  for sweep, grid in sweep_lib.sweeps_from_file(CONFIG_DIR / name).items():
    config = _config(name, SWEEP_VARIANTS.get((name, sweep), "runlocal"))
    # PCA to up to 500 components needs the variant's own (512-d) cells.
    keep = ({"dataset.dim": config.dataset.dim}
            if _has(config, "dataset.pca_components") and _has(config, "dataset.dim") else {})
    for point, overrides in grid:
      try:
        setup(tiny(apply_overrides(config, overrides), **keep))
      except Exception as e:  # pylint: disable=broad-except
        raise AssertionError(f"{name} sweep {sweep!r} point {point!r}: {e}") from e


def test_main_job_on_shipped_wells_with_baselines(tmp_path, capsys):
  """MixFlow, its CFM twin and CellFlux on the shipped real wells (tiny steps): one table
  with the four trivial baselines, compound metrics with intervals and the verdict lines."""
  from experiments.configs import mixflow_bbbc021
  # 50 generated wells per compound (the config's 200 only tightens the metrics).
  config = tiny(mixflow_bbbc021.get_config("runlocal"),
                **{"base.num_modes": 3, "eval.samples_per_condition": 50})
  results = train_with_baselines(config, tmp_path, label="mixflow")
  out = capsys.readouterr().out
  for row in ("mixflow", "cfm_ot_twin", "cellflux", "control (baseline)", "pooled (baseline)",
              "nearest (baseline)", "linear (baseline)"):
    assert f"| {row} |" in out
  assert "Best per metric: mmd_u:" in out and "MoA accuracy of the same classifier" in out
  held = sorted(["taxol", "ALLN", "bryostatin", "simvastatin", "MG-132", "methotrexate",
                 "colchicine", "cytochalasin B", "AZ258", "cisplatin"])
  for point in ("mixflow", "cfm_ot_twin", "cellflux"):
    ev = results[point]
    assert sorted(ev["energy_u"]["heldout"]["per_condition"]) == held
    for m in ("mmd_u", "energy_u", "rmse_mean", "pearson_delta", "retrieval_rank", "top1"):
      assert np.isfinite(ev[m]["heldout"]["mean"]), (point, m)
    assert len(ev["mmd_u"]["validation"]["per_condition"]) == 4
    rdir = tmp_path if point == "mixflow" else tmp_path / "baselines" / point
    gen = np.load(rdir / "samples.npz")
    assert {gen[f"heldout/{c}"].shape for c in held} == {(50, 189)}
  # CellFlux's inference noise: every generated well is distinct, although a
  # compound has only 6-18 control wells to start from.
  gen = np.load(tmp_path / "baselines" / "cellflux" / "samples.npz")["heldout/taxol"]
  assert len(np.unique(gen, axis=0)) == len(gen)
  summary = json.loads((tmp_path / "comparison.json").read_text())
  assert [r["name"] for r in summary["points"]] == ["mixflow", "cellflux", "cfm_ot_twin",
                                                    "control", "pooled", "nearest", "linear"]
  assert all(r["metrics"]["energy_u"]["ci"] is not None for r in summary["points"])

"""CellFlux on image crops end to end: streamed training, resume, arms, baselines, devices.

Tiny synthetic 8 x 8 crops (`tests.helpers.write_crops`) and a one-level U-Net
of width 8, so each run compiles in seconds; the real crops run in
`results/cellflux_bbbc021_images.md`.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="needs the 'images' extra")
pytest.importorskip("skimage", reason="needs the 'images' extra")

from experiments.configs import cellflux_bbbc021_images  # noqa: E402
from flowzoo import config as config_lib  # noqa: E402
from flowzoo.experiment import setup, train_and_evaluate, train_with_baselines  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.helpers import write_crops  # noqa: E402


def tiny(root, **overrides):
  """The runlocal config on `root`'s crops (see the `root` fixture), shrunk to seconds."""
  c = cellflux_bbbc021_images.get_config("runlocal")
  c.dataset.update(path=str(root / "index.csv"), data_dir=str(root / "tfds"), image_size=0)
  c.data.update(batch_size=8, populations_per_batch=8)
  c.model.update(base_channels=8, channel_mult=(1,), emb_dim=16)
  c.train.update(steps=4, log_every=2, ckpt_every=2, keep_checkpoints=2)
  c.eval.update(num_steps=2, max_samples=8, chunk=16)
  c.baselines = {}
  for k, v in overrides.items():
    section, field = k.split(".")
    c[section][field] = v
  return c


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """A folder with 5 synthetic crops per (plate, condition), written once."""
  root = tmp_path_factory.mktemp("img")
  write_crops(root, per_group=5)
  return root


def test_run_with_arms_baselines_and_pictures(root, capsys):
  config = tiny(root)
  config.baselines = {"guidance_1": "eval.guidance=1.0"}
  results = train_with_baselines(config, root / "run", label="cellflux")
  out = capsys.readouterr().out
  for row in ("cellflux", "guidance_1", "control (baseline)", "pooled (baseline)",
              "train_cells (baseline)"):
    assert f"| {row} |" in out, row
  ev = results["cellflux"]
  conditions = ["aphid@0.5uM", "taxol@1uM", "taxol@3uM"]
  for metric in ("fid_o", "fid_c", "kid_o", "kid_c", "accuracy"):
    for split in ("train", "heldout"):
      assert np.isfinite(ev[metric][split]["mean"]), (metric, split)
  assert sorted(ev["fid_c"]["heldout"]["per_condition"]) == conditions
  run = root / "run"
  for f in ("heldout_real_vs_generated.png", "train_real_vs_generated.png",
            "heldout_trajectories.png"):
    assert (run / f).stat().st_size > 1000, f
  traj = np.load(run / "trajectories.npz")
  # Forward from 3 held-out controls; backward from the 2 held-out treated cells there are.
  assert traj["forward"].shape == (5, 3, 8, 8, 3) and traj["backward"].shape == (5, 2, 8, 8, 3)
  # The guidance arm evaluated this run's final checkpoint instead of training again.
  arm = run / "baselines" / "guidance_1"
  assert "differs from cellflux in evaluation settings only" in out
  metrics = arm / "train_metrics.jsonl"
  assert not metrics.exists() or not metrics.read_text().strip()  # no training step logged
  gen, arm_gen = np.load(run / "samples.npz"), np.load(arm / "samples.npz")
  assert not np.array_equal(gen["heldout/taxol@3uM"], arm_gen["heldout/taxol@3uM"])


def test_resumed_image_run_matches_uninterrupted(root):
  # A batch is a function of (seed, step): a run resumed at step 2 reads the batches
  # the uninterrupted run of the first test (root/run, same training config) read.
  if not (root / "run" / "samples.npz").exists():
    pytest.skip("needs test_run_with_arms_baselines_and_pictures's run")
  config = tiny(root)
  train_and_evaluate(config, root / "cut")
  for f in ("eval.json", "samples.npz"):
    (root / "cut" / f).unlink()
  shutil.rmtree(root / "cut" / "checkpoints" / "4")
  train_and_evaluate(config, root / "cut")
  a, b = np.load(root / "cut" / "samples.npz"), np.load(root / "run" / "samples.npz")
  assert sorted(a.files) == sorted(b.files)
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k])


def test_bad_image_configs_fail_before_compiling(root, tmp_path):
  with pytest.raises(ValueError, match="checkpoint selection is not available for image"):
    setup(tiny(root, **{"eval.select": "heldout/fid_o"}))
  with pytest.raises(KeyError, match=r"unknown metric\(s\) \['w2'\] for image data"):
    setup(tiny(root, **{"eval.metrics": ("w2",)}))
  with pytest.raises(FileNotFoundError, match="no index CSV"):
    setup(tiny(root, **{"dataset.path": str(tmp_path)}))
  one_plate = tiny(root, **{"dataset.pairing": "other_plates"})
  one_plate.dataset.update(path=str(write_crops(tmp_path, per_group=5, plates=("P1",))),
                           data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match="needs controls from 2\\+ plates"):
    setup(one_plate)


TWO_DEVICES = """
import json, sys
import jax, numpy as np
from experiments.configs import cellflux_bbbc021_images
from flowzoo import config as config_lib
from flowzoo.experiment import setup
config = config_lib.apply_overrides(cellflux_bbbc021_images.get_config("runlocal"),
                                    json.loads(sys.argv[1]))
exp = setup(config)
state = exp.init()
for _ in range(2):
  state, _ = exp.dispatch(state, jax.random.key(1), 1)
assert len(exp.trainer.mesh.devices.ravel()) == 2
np.save(sys.argv[2], np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(state.params))]))
"""


def test_two_devices_train_as_one(root, tmp_path):
  # Batches are split over the data mesh; the step must not depend on the split.
  config = tiny(root, **{"train.steps_per_dispatch": 1})
  exp = setup(config)
  state = exp.init()
  for _ in range(2):  # two steps, one compiled program
    state, _ = exp.dispatch(state, jax.random.key(1), 1)
  ref = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(state.params))])
  overrides = flat_overrides(config)
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
             + " --xla_force_host_platform_device_count=2", PYTHONPATH=str(REPO))
  out = tmp_path / "params.npy"
  subprocess.run([sys.executable, "-c", TWO_DEVICES, json.dumps(overrides), str(out)],
                 check=True, env=env, cwd=REPO)
  np.testing.assert_allclose(np.load(out), ref, rtol=1e-5, atol=1e-6)


def flat_overrides(config):
  """The dataset/data/model/train fields `tiny` sets, as dotted overrides (JSON)."""
  keep = ("dataset.", "data.", "model.", "train.")
  flat = config_lib.flatten(config.to_dict())
  return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()
          if k.startswith(keep)}


def test_paper_preset_holds_cellflux_code_settings():
  c = cellflux_bbbc021_images.get_config("paper")
  assert (c.optim.name, c.optim.lr, c.optim.b2, c.optim.weight_decay) == ("adamw", 1e-4, 0.95, 0.01)
  assert (c.eval.solver, c.eval.num_steps, c.eval.guidance) == ("heun", 50, 1.2)
  assert (c.method.decide_per, c.method.time_sampling) == ("batch", "skewed")
  assert (c.method.p_uncond, c.method.source_noise_prob) == (0.2, 0.5)
  assert c.dataset.image_size == 64 and len(c.model.channel_mult) == 4  # four stages (App. C)
  assert c.model.base_channels == 128 and c.data.batch_size == 128

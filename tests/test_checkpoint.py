"""Checkpoints on a bad disk: damaged, non-finite, unreadable config, failed saves."""

import errno
import json
import re
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.checkpointers import async_checkpointer

from flowzoo.checkpoint import (CheckpointRestoreError, Checkpointer, CheckpointSaveError,
                                nonfinite_leaves)

CONFIG = {"model": {"hidden": [4]}, "train": {"steps": 3}}


def state(step, value=None):
  value = float(step) if value is None else value
  return {"step": jnp.asarray(step, jnp.int32), "params": {"w": jnp.full((3, 2), value)},
          "ema": {"w": jnp.full((3,), value)}}


ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state(0))


def saved(workdir, steps=(1, 2, 3)):
  ckpt = Checkpointer(workdir, CONFIG, keep=5)
  for s in steps:
    ckpt.save(s, state(s))
  ckpt.close()
  return Checkpointer(workdir, CONFIG, keep=5)


def _data_files(step_dir):
  return [p for p in (step_dir / "default").rglob("*")
          if p.is_file() and (p.parent.name == "d" or p.name.startswith("manifest"))]


def damage(step_dir, how):
  """The four ways the newest checkpoint was found damaged (issue 22)."""
  if how == "random_bytes":
    for p in _data_files(step_dir):
      p.write_bytes(np.random.default_rng(0).bytes(max(p.stat().st_size, 64)))
  elif how == "truncated":
    for p in _data_files(step_dir):
      p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
  elif how == "missing_default":
    shutil.rmtree(step_dir / "default")
  elif how == "garbage_metadata":
    (step_dir / "default" / "_METADATA").write_text("{garbage")


@pytest.mark.parametrize("how", ["random_bytes", "truncated", "missing_default",
                                 "garbage_metadata"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, how, capsys):
  ckpt = saved(tmp_path)
  damage(tmp_path / "checkpoints" / "3", how)
  restored = ckpt.restore(ABSTRACT)  # used to raise a raw TensorStore / JSON error
  assert int(restored["step"]) == 2
  np.testing.assert_array_equal(restored["params"]["w"], 2.0)
  out = capsys.readouterr().out
  assert f"skipping checkpoint {tmp_path / 'checkpoints' / '3'}: " in out
  assert "moved step(s) [3] to" in out
  # Out of orbax's way: the resumed run saves step 3 again.
  assert ckpt.all_steps() == [1, 2] and (tmp_path / "checkpoints.damaged" / "3").is_dir()
  ckpt.save(3, state(3, value=7.0))
  ckpt.wait()
  np.testing.assert_array_equal(ckpt.restore(ABSTRACT)["params"]["w"], 7.0)
  ckpt.close()


def test_non_finite_checkpoint_is_skipped(tmp_path, capsys):
  ckpt = saved(tmp_path, steps=(1,))
  # As an older flowzoo saved it with lr=inf: past the save-time check.
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ckpt.manager.save(2, args=ocp.args.StandardSave(state(2, value=np.nan)))
  ckpt.wait()
  ckpt.manager.wait_until_finished()
  assert int(ckpt.restore(ABSTRACT)["step"]) == 1
  out = capsys.readouterr().out
  assert "checkpoints/2: NaN/inf values in ['ema']['w'], ['params']['w']" in out
  ckpt.close()


def test_every_checkpoint_damaged_raises_and_moves_nothing(tmp_path):
  ckpt = saved(tmp_path, steps=(1, 2))
  for s in (1, 2):
    damage(tmp_path / "checkpoints" / str(s), "missing_default")
  with pytest.raises(CheckpointRestoreError, match=r"can be restored \(step 2: .*; step 1: .*"
                                                   r"Pass --overwrite"):
    ckpt.restore(ABSTRACT)
  assert ckpt.all_steps() == [1, 2] and not (tmp_path / "checkpoints.damaged").exists()
  with pytest.raises(CheckpointRestoreError, match=r"checkpoint .*/checkpoints/1 cannot be "
                                                   r"restored: KeyError: .Item \"default\""):
    ckpt.restore(ABSTRACT, 1)  # an explicit step names its directory
  ckpt.close()


def test_save_refuses_a_non_finite_state(tmp_path):
  ckpt = Checkpointer(tmp_path, CONFIG)
  bad = state(1)
  bad["ema"]["w"] = bad["ema"]["w"].at[0].set(jnp.inf)
  with pytest.raises(FloatingPointError, match=r"state at step 1 has NaN/inf values in 1 "
                                               r"array\(s\) \(\['ema'\]\['w'\]\); not checkpoint"):
    ckpt.save(1, bad)
  ckpt.close()
  assert ckpt.all_steps() == [] and ckpt.last_saved_step() is None


def test_nonfinite_leaves_ignores_integers_and_names_paths():
  tree = {"a": jnp.array([1.0, jnp.nan]), "n": jnp.array(3), "b": [jnp.ones(2), -jnp.inf]}
  assert nonfinite_leaves(tree) == ["['a']", "['b'][1]"]
  assert nonfinite_leaves(state(1)) == []


def test_garbage_config_json_names_the_file_and_overwrite(tmp_path):
  saved(tmp_path, steps=(1,)).close()
  (tmp_path / "config.json").write_text("\x00\x01garbage")
  with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'} is not a readable config .*"
                                       r"Pass --overwrite"):
    Checkpointer(tmp_path, CONFIG)
  ckpt = Checkpointer(tmp_path, CONFIG, overwrite=True)  # discards the unmatched run
  assert ckpt.all_steps() == []
  assert json.loads((tmp_path / "config.json").read_text()) == CONFIG
  ckpt.close()


def _disk_full(*args, **kwargs):
  raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_background_save_raises_with_path_and_free_space(tmp_path, monkeypatch, capsys):
  ckpt = saved(tmp_path, steps=(1,))
  # Orbax renames the finished step in its background thread: fail there, as
  # a full disk did, after the data went to the temporary directory.
  monkeypatch.setattr(async_checkpointer, "_on_commit_callback", _disk_full)
  ckpt.save(2, state(2))
  while ckpt.manager.is_saving_in_progress():  # wait for the background thread only
    time.sleep(0.01)
  with pytest.raises(CheckpointSaveError) as err:
    ckpt.check()  # non-blocking; orbax itself would report this only at the next save
  msg = str(err.value)
  assert f"saving the checkpoint of step 2 to {tmp_path / 'checkpoints' / '2'} failed" in msg
  assert "OSError: [Errno 28] No space left on device" in msg
  assert re.search(r"Free space there: \d+\.\d\d GiB of \d+\.\d GiB", msg)
  assert "resumes from the last complete checkpoint, step 1" in msg
  ckpt.close()
  leftovers = list((tmp_path / "checkpoints").glob("2.orbax-checkpoint-tmp*"))
  assert leftovers
  # The next start removes the unfinished save and says so.
  monkeypatch.undo()
  again = Checkpointer(tmp_path, CONFIG)
  assert f"removing {leftovers[0]}: an unfinished checkpoint save" in capsys.readouterr().out
  assert not leftovers[0].exists() and again.all_steps() == [1]
  again.close()


def test_failed_save_in_the_foreground_is_reported_too(tmp_path, monkeypatch):
  ckpt = Checkpointer(tmp_path, CONFIG)
  monkeypatch.setattr(ckpt.manager, "save", _disk_full)
  with pytest.raises(CheckpointSaveError, match=r"step 5 .* failed \(OSError: \[Errno 28\].*"
                                                r"GiB of .* starts over \(no checkpoint"):
    ckpt.save(5, state(5))
  ckpt.close()


def test_failed_save_is_reported_by_wait(tmp_path, monkeypatch):
  ckpt = Checkpointer(tmp_path, CONFIG)
  monkeypatch.setattr(async_checkpointer, "_on_commit_callback", _disk_full)
  ckpt.save(1, state(1))
  with pytest.raises(CheckpointSaveError, match="step 1"):
    ckpt.wait()
  ckpt.close()  # the error is reported once



# -- through a run -----------------------------------------------------------


def _checkpoint(path):
  """The arrays of one step directory, without a target structure."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return jax.device_get(ocp.StandardCheckpointer().restore(path / "default"))


def _run_config(**overrides):
  from tests.helpers import tiny_letters_config  # pylint: disable=import-outside-toplevel
  return tiny_letters_config(**{"eval.select": "", **overrides})


def test_run_resumes_past_a_damaged_newest_checkpoint(tmp_path, capsys):
  from flowzoo.experiment import train_and_evaluate  # pylint: disable=import-outside-toplevel
  config = _run_config()  # 8 steps, checkpoints at 4 and 8
  first = train_and_evaluate(config, tmp_path)
  want = _checkpoint(tmp_path / "checkpoints" / "8")
  damage(tmp_path / "checkpoints" / "8", "truncated")
  capsys.readouterr()
  # reevaluate: a finished run is otherwise reused from its eval.json, not restored.
  again = train_and_evaluate(config, tmp_path, reevaluate=True)
  out = capsys.readouterr().out
  assert f"skipping checkpoint {tmp_path / 'checkpoints' / '8'}: ValueError: " in out
  assert "resuming from checkpoint at step 4" in out
  # Steps 5-8 retrained from step 4 give the lost checkpoint back, bit for bit.
  jax.tree.map(np.testing.assert_array_equal, _checkpoint(tmp_path / "checkpoints" / "8"), want)
  assert again == first


def test_run_never_checkpoints_a_diverged_state(tmp_path):
  from flowzoo.experiment import train_and_evaluate  # pylint: disable=import-outside-toplevel
  # The loss of step 1 is finite; the update it makes overflows to inf. Such
  # a state was saved, and a rerun resumed from it.
  config = _run_config(**{"optim.name": "sgd", "optim.lr": 3e38, "optim.grad_clip": 0.0,
                          "train.steps_per_dispatch": 1, "train.log_every": 1,
                          "train.ckpt_every": 1, "train.steps": 2})
  with pytest.raises(FloatingPointError,
                     match=r"state at step 1 has NaN/inf values .*\.params\['velocity'\].*"
                           r"No checkpoint was saved\. Training diverged: lower the learning "
                           r"rate \(config.optim.lr, now 3e\+38\) or clip gradients"):
    train_and_evaluate(config, tmp_path)
  assert not any((tmp_path / "checkpoints").iterdir())


def test_run_stops_at_the_first_failed_save(tmp_path, monkeypatch):
  from flowzoo.experiment import train_and_evaluate  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(async_checkpointer, "_on_commit_callback", _disk_full)
  # It used to train on and crash with a bare OSError at the next save.
  with pytest.raises(CheckpointSaveError, match=r"checkpoint of step 4 .* No space left on "
                                                r"device.*starts over"):
    train_and_evaluate(_run_config(**{"train.steps": 16}), tmp_path)
  assert not (tmp_path / "checkpoints" / "8").exists()

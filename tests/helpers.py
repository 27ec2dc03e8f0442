"""Tiny configs shared by tests (kept small: compiles dominate on 2 cores)."""

from experiments.configs import cfm_letters


def tiny_letters_config(**overrides):
  """cfm_letters runlocal shrunk to seconds: 2 letters, 4 rotations, tiny MLP."""
  c = cfm_letters.get_config("runlocal")
  c.dataset.letters = "SH"
  c.dataset.num_rotations = 4
  c.dataset.copies = 1
  c.dataset.points_per_copy = 64
  c.model.hidden = (16, 16)
  c.model.cond_embed = 8
  c.data.batch_size = 16
  c.data.populations_per_batch = 1
  c.train.steps = 8
  c.train.steps_per_dispatch = 4
  c.train.log_every = 4
  c.train.ckpt_every = 4
  c.train.keep_checkpoints = 6  # room for selection when a test lengthens the run
  c.train.ema_decay = 0.9
  c.eval.select = "heldout/w2"  # the Table 1 protocol the full config uses
  c.eval.solver = "euler"
  c.eval.num_steps = 4
  c.eval.max_samples = 64
  c.eval.chunk = 128
  c.eval.splits = ("heldout",)
  c.eval.plot_conditions = 2
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c

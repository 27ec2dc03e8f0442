"""Runs one experiment: `python -m experiments.run --config=NAME.py[:variant] --workdir=DIR`.

Intentionally kept short: parses flags and calls `train_and_evaluate`, or,
when the config has a non-empty `compare.sweep` (e.g. mixflow_bbbc021.py:
MixFlow vs CFM), runs that named sweep of the config file
(`flowzoo.sweep.run_named`) and prints its table. A bare
config name resolves in `experiments/configs/`; `--config.a.b=v` overrides a
field (a misspelt field is an error: configs are locked).
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def resolve_config_arg(value: str) -> str:
  """Maps `name.py[:arg]` to the config folder when it is not a path that exists."""
  path, sep, arg = value.partition(":")
  if not Path(path).exists() and (CONFIG_DIR / path).exists():
    path = str(CONFIG_DIR / path)
  return path + sep + arg


def _rewrite_argv(argv: list[str]) -> list[str]:
  out = []
  for a in argv:
    if a.startswith("--config="):
      a = "--config=" + resolve_config_arg(a[len("--config="):])
    out.append(a)
  return out


_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Discard checkpoints in --workdir made with a different config.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = _CONFIG.value
  if config.get("compare") and config.compare.sweep:
    from flowzoo.sweep import run_named  # after flag parsing: faster --help
    run_named(config, config_flags.get_config_filename(flags.FLAGS["config"]),
              config.compare.sweep, _WORKDIR.value, overwrite=_OVERWRITE.value)
    return
  from flowzoo.experiment import train_and_evaluate
  train_and_evaluate(config, _WORKDIR.value, overwrite=_OVERWRITE.value)


if __name__ == "__main__":
  sys.argv = _rewrite_argv(sys.argv)
  app.run(main)

"""Command-line plumbing shared by `experiments.run` and `experiments.sweep`.

* A bare `--config=name.py[:variant]` resolves in `experiments/configs/`.
* `--config.<section>.name=X` (section: dataset, method, model, base,
  coupling) swaps the component *before* the other `--config.*` overrides are
  applied, with X's constructor defaults written into the section. So the new
  component's own knobs can be set on the same command line
  (`--config.model.name=unet --config.model.base_channels=8`); without this
  the locked config would refuse them, since the file only holds the old
  component's fields. The stored config is the same as a sweep point's
  (`flowzoo.sweep.apply_overrides`), which this reuses.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def resolve_config_arg(value: str) -> str:
  """Maps `name.py[:arg]` to the config folder when it is not a path that exists."""
  path, sep, arg = value.partition(":")
  if not Path(path).exists() and (CONFIG_DIR / path).exists():
    path = str(CONFIG_DIR / path)
  return path + sep + arg


def rewrite_argv(argv: list[str]) -> list[str]:
  """`argv` with a bare `--config=` value resolved (see `resolve_config_arg`)."""
  return ["--config=" + resolve_config_arg(a[len("--config="):]) if a.startswith("--config=")
          else a for a in argv]


def component_swaps(argv: list[str], name: str = "config") -> dict[str, str]:
  """`{section: component}` from `--<name>.<section>.name=X` flags (last one wins)."""
  from flowzoo.build import SECTIONS  # pylint: disable=import-outside-toplevel
  swaps = {}
  for i, a in enumerate(argv):
    if not a.startswith(f"--{name}."):
      continue
    key, eq, value = a[len(name) + 3:].partition("=")
    if not eq:  # `--config.model.name unet`
      if i + 1 >= len(argv):
        continue
      value = argv[i + 1]
    section, _, field = key.partition(".")
    if field == "name" and section in SECTIONS:
      swaps[section] = value
  return swaps


class _SwappingParser(flags.ArgumentParser):
  """Wraps config_flags' file parser: loads the config, then applies the argv's swaps."""

  def __init__(self, inner: flags.ArgumentParser, name: str, argv: list[str] | None):
    self._inner, self._name, self._argv = inner, name, argv

  def flag_type(self):
    return self._inner.flag_type()

  def parse(self, path):
    config = self._inner.parse(path)
    # The argv the override flags come from (config_flags reads sys.argv too).
    swaps = component_swaps(sys.argv if self._argv is None else self._argv, self._name)
    if not swaps:
      return config
    from flowzoo.sweep import apply_overrides  # pylint: disable=import-outside-toplevel
    try:
      return apply_overrides(config, {f"{s}.name": v for s, v in swaps.items()})
    except KeyError as e:  # unknown component name: absl reports ValueErrors cleanly
      raise ValueError(e.args[0] if e.args else str(e)) from None


def define_config_flag(name: str = "config", *, flag_values=flags.FLAGS,
                       sys_argv: list[str] | None = None):
  """`config_flags.DEFINE_config_file` (locked) whose component swaps apply first."""
  handle = config_flags.DEFINE_config_file(name, None, "Experiment config file.",
                                           flag_values=flag_values, lock_config=True,
                                           sys_argv=sys_argv)
  flag = flag_values[name]
  flag.parser = _SwappingParser(flag.parser, name, sys_argv)
  return handle


def quiet_logging() -> None:
  """WARNING unless --verbosity was given: orbax logs every save at INFO."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)

"""Command-line plumbing shared by `experiments.run` and `experiments.sweep`.

* A bare `--config=name[.py][:variant]` (no directory part) resolves in
  `experiments/configs/` first, so a local file of the same name does not
  silently replace a bundled config; a path with a directory is used as is.
  The file loaded is logged at start.
* `--config.<section>.name=X` (section: dataset, method, model, base,
  coupling) swaps the component *before* the other `--config.*` overrides are
  applied, with X's constructor defaults written into the section. So the new
  component's own knobs can be set on the same command line
  (`--config.model.name=unet --config.model.base_channels=8`); without this
  the locked config would refuse them, since the file only holds the old
  component's fields. The stored config is the same as a sweep point's
  (`flowzoo.config.apply_overrides`, which this reuses).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# The argv as typed (before `rewrite_argv`), for the command recorded in results pages.
ORIGINAL_ARGV: list[str] = []


def bundled_configs() -> list[str]:
  """File names of the configs in `experiments/configs/`."""
  return sorted(p.name for p in CONFIG_DIR.glob("*.py")
                if not p.name.startswith("_") and not p.stem.endswith("common"))


def resolve_config_arg(value: str) -> str:
  """Maps a bare `name[.py][:arg]` to the bundled config folder (see the module docstring).

  Raises:
    ValueError: for a bare name that is neither bundled nor a file here,
      listing the bundled configs.
  """
  path, sep, arg = value.partition(":")
  if "/" not in path and "\\" not in path:
    name = path if path.endswith(".py") else path + ".py"
    if (CONFIG_DIR / name).exists():
      return str(CONFIG_DIR / name) + sep + arg
    if not Path(path).exists():
      raise ValueError(f"--config={value}: no bundled config {name!r}; bundled: "
                       f"{', '.join(bundled_configs())} (or give a path to your own file).")
  return path + sep + arg


def config_label() -> str:
  """The config file's stem (e.g. "mixflow_bbbc021"), from the parsed flag."""
  return Path(config_flags.get_config_filename(flags.FLAGS["config"])).stem


def command_line() -> str:
  """The command as typed: `python -m <module> <args>`."""
  import shlex  # pylint: disable=import-outside-toplevel
  argv = ORIGINAL_ARGV or sys.argv
  module = Path(argv[0]).stem
  return "python -m experiments." + module + " " + " ".join(shlex.quote(a) for a in argv[1:])


def rewrite_argv(argv: list[str]) -> list[str]:
  """`argv` with a bare `--config=` value resolved (see `resolve_config_arg`).

  An unknown bare name ends the program with one line and exit status 2.
  """
  try:
    return ["--config=" + resolve_config_arg(a[len("--config="):]) if a.startswith("--config=")
            else a for a in argv]
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def component_swaps(argv: list[str], name: str = "config") -> dict[str, str]:
  """`{section: component}` from `--<name>.<section>.name=X` flags (last one wins)."""
  from flowzoo.config import SECTIONS  # pylint: disable=import-outside-toplevel
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


def check_override_keys(config, argv: list[str], name: str, swaps: dict[str, str]) -> None:
  """Raises ValueError naming the section and its valid fields for a misspelt override.

  absl would report it too, but as a long traceback; a field a swapped-in
  component takes is allowed (it is added when the swap is applied).
  """
  from flowzoo.config import SECTIONS  # pylint: disable=import-outside-toplevel
  for a in argv:
    if not a.startswith(f"--{name}."):
      continue
    *path, last = a[len(name) + 3:].partition("=")[0].split(".")
    node, where = config, name
    for p in path:
      if p not in node:
        raise ValueError(f"--{a[2:].partition('=')[0]}: {where} has no field {p!r}; valid: "
                         f"{sorted(node.keys())}.")
      node, where = node[p], f"{where}.{p}"
    if last not in node:
      section = path[0] if len(path) == 1 else None
      accepted = SECTIONS[section].accepted(swaps[section]) if section in swaps else None
      if not accepted or last not in accepted:
        raise ValueError(f"--{a[2:].partition('=')[0]}: {where} has no field {last!r}; "
                         f"valid: {sorted(node.keys())}.")


class _SwappingParser(flags.ArgumentParser):
  """Wraps config_flags' file parser: loads the config, then applies the argv's swaps."""

  def __init__(self, inner: flags.ArgumentParser, name: str, argv: list[str] | None):
    self._inner, self._name, self._argv = inner, name, argv

  def flag_type(self):
    return self._inner.flag_type()

  def parse(self, path):
    config = self._inner.parse(path)
    # The argv the override flags come from (config_flags reads sys.argv too).
    argv = sys.argv if self._argv is None else self._argv
    swaps = component_swaps(argv, self._name)
    check_override_keys(config, argv, self._name, swaps)
    if not swaps:
      return config
    from flowzoo.config import apply_overrides  # pylint: disable=import-outside-toplevel
    try:
      return apply_overrides(config, {f"{s}.name": v for s, v in swaps.items()})
    except KeyError as e:  # unknown component name: absl reports ValueErrors cleanly
      raise ValueError(e.args[0] if e.args else str(e)) from None


def define_config_flag(name: str = "config", *, flag_values=flags.FLAGS,
                       sys_argv: list[str] | None = None):
  """`config_flags.DEFINE_config_file` (locked) whose component swaps apply first."""
  handle = config_flags.DEFINE_config_file(
      name, None, "Experiment config: a bundled name[.py][:variant] (" +
      ", ".join(bundled_configs()) + ") or a path to a config file.",
                                           flag_values=flag_values, lock_config=True,
                                           sys_argv=sys_argv)
  flag = flag_values[name]
  flag.parser = _SwappingParser(flag.parser, name, sys_argv)
  return handle


flags.DEFINE_bool(
    "verbose", False, "Show the full traceback of configuration, data and workdir errors "
    "(also: environment variable FLOWZOO_TRACEBACK=1).")


def user_error_types() -> tuple[type, ...]:
  """Errors of the user's input (config, data, workdir): printed as one line."""
  from flowzoo.checkpoint import (  # pylint: disable=import-outside-toplevel
      CheckpointRestoreError, CheckpointSaveError)
  from flowzoo.workdir_lock import WorkdirLockedError  # pylint: disable=import-outside-toplevel
  return (ValueError, KeyError, FileNotFoundError, NotADirectoryError, FloatingPointError,
          CheckpointRestoreError, CheckpointSaveError, WorkdirLockedError)


def one_line_errors(main):
  """Wraps an absl `main`: user errors print `error: <message>` and exit with status 2.

  The project's own checks raise ValueError, KeyError, FileNotFoundError and
  the workdir/checkpoint errors with a message that says what to change, so
  a traceback only hides it. Any other exception (a bug) keeps its
  traceback, and so does everything with `--verbose` or FLOWZOO_TRACEBACK=1.
  Ctrl-C during training prints the step reached and exits with status 130.
  """
  import functools  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except KeyboardInterrupt as e:
      print(str(e) or "interrupted.", file=sys.stderr)
      sys.exit(130)
    except Exception as e:  # pylint: disable=broad-except
      # The Flag object's value: readable even when flags were not parsed (tests).
      if (flags.FLAGS["verbose"].value or os.environ.get("FLOWZOO_TRACEBACK") == "1"
          or not isinstance(e, user_error_types())):
        raise
      msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
      print(f"error: {msg}", file=sys.stderr)
      sys.exit(2)
  return wrapped


def quiet_logging() -> None:
  """WARNING unless --verbosity was given: orbax logs every save at INFO."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  print(f"config: {config_flags.get_config_filename(flags.FLAGS['config'])}")

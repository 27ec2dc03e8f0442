"""Command-line plumbing: config name resolution, misspelt overrides, one-line user errors."""

import pytest

from experiments import cli
from experiments.configs import cfm_letters
from flowzoo import build as build_lib
from flowzoo.checkpoint import _importance
from flowzoo.config import apply_overrides
from flowzoo.experiment import Interrupted


def test_bare_names_prefer_bundled_configs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "cfm_letters.py").write_text("raise SystemExit('the local file was loaded')\n")
  bundled = str(cli.CONFIG_DIR / "cfm_letters.py")
  assert cli.resolve_config_arg("cfm_letters.py:runlocal") == bundled + ":runlocal"
  assert cli.resolve_config_arg("cfm_letters") == bundled  # the .py is optional
  # A path with a directory part is the user's own file.
  assert cli.resolve_config_arg("./cfm_letters.py") == "./cfm_letters.py"
  with pytest.raises(ValueError, match=r"no bundled config 'nosuch.py'; bundled: .*cfm_letters.py"):
    cli.resolve_config_arg("nosuch")


def test_misspelt_override_names_section_and_fields():
  c = cfm_letters.get_config("runlocal")
  with pytest.raises(ValueError, match=r"config.model has no field 'hiden'; valid: .*'hidden'"):
    cli.check_override_keys(c, ["--config.model.hiden=3"], "config", {})
  with pytest.raises(ValueError, match=r"config has no field 'modle'"):
    cli.check_override_keys(c, ["--config.modle.hidden=3"], "config", {})
  # A field of a component swapped in on the same line is allowed.
  cli.check_override_keys(c, ["--config.model.name=unet", "--config.model.base_channels=8"],
                          "config", {"model": "unet"})
  with pytest.raises(ValueError, match="base_channels"):
    cli.check_override_keys(c, ["--config.model.base_channels=8"], "config", {})


def _run(main, capsys, monkeypatch, env=None):
  for k, v in (env or {}).items():
    monkeypatch.setenv(k, v)
  with pytest.raises(SystemExit) as e:
    cli.one_line_errors(main)([])
  return e.value.code, capsys.readouterr().err


def test_user_errors_print_one_line(capsys, monkeypatch):
  def bad_config(argv):
    raise ValueError("config.train.steps must be > 0, got 0.")
  code, err = _run(bad_config, capsys, monkeypatch)
  assert code == 2 and err == "error: config.train.steps must be > 0, got 0.\n"

  def unknown_name(argv):
    raise KeyError("Unknown model 'mlpp'.")
  code, err = _run(unknown_name, capsys, monkeypatch)
  assert code == 2 and err == "error: Unknown model 'mlpp'.\n"  # no KeyError quotes

  def interrupted(argv):
    raise Interrupted("interrupted at step 500; run the same command again to resume.")
  code, err = _run(interrupted, capsys, monkeypatch)
  assert code == 130 and "interrupted at step 500" in err

  def bug(argv):
    raise TypeError("a bug keeps its traceback")
  with pytest.raises(TypeError):
    cli.one_line_errors(bug)([])
  monkeypatch.setenv("FLOWZOO_TRACEBACK", "1")
  with pytest.raises(ValueError):  # the traceback on request
    cli.one_line_errors(bad_config)([])


def test_missing_data_file_names_its_config_field(tmp_path):
  from experiments.configs import mixflow_bbbc021  # pylint: disable=import-outside-toplevel
  c = apply_overrides(mixflow_bbbc021.get_config("runlocal"),
                      {"dataset.path": str(tmp_path / "wells.csv")})
  with pytest.raises(FileNotFoundError, match=r"wells.csv does not exist: it is "
                     r"config.dataset.path of dataset 'bbbc021_wells'; .*--config.dataset.path="):
    build_lib.build_dataset(c)


def test_config_differences_list_components_first():
  diff = ["base.dropout", "base.hidden", "model.hidden", "optim.lr", "dataset.name", "method.name"]
  assert sorted(diff, key=_importance)[:2] == ["dataset.name", "method.name"]
  assert sorted(diff, key=_importance)[-1] == "optim.lr"

"""Registry behaviour and: every registered component builds and runs once."""

import pytest

from flowzoo import build as build_lib
from flowzoo.registry import BASES, COUPLINGS, METHODS, MODELS, Registry


def test_unknown_name_lists_valid_names():
  reg = Registry("widget")
  reg.register("alpha")(dict)
  reg.register("beta")(dict)
  with pytest.raises(KeyError, match=r"Unknown widget 'alpah'.*Did you mean 'alpha'.*"
                     r"alpha \(builtins\), beta \(builtins\)"):
    reg.get("alpah")


def test_duplicate_registration_raises():
  reg = Registry("widget")
  reg.register("a")(dict)
  with pytest.raises(KeyError, match="already registered"):
    reg.register("a")(dict)


def test_build_checks_kwargs_and_wires_only_accepted():
  reg = Registry("widget")

  @reg.register("w")
  def make(*, size, colour="red"):
    return (size, colour)

  assert reg.build("w", {"size": 3}, wired={"colour": "blue", "event_shape": (2,)}) == (3, "blue")
  assert reg.build("w", {"size": 3, "colour": "green"}, wired={"colour": "blue"}) == (3, "green")
  with pytest.raises(TypeError, match=r"unknown argument\(s\) \['sise'\]; accepted: \['colour', 'size'\]"):
    reg.build("w", {"sise": 3})


def test_temporary_registration_does_not_leak():
  with MODELS.temporary("tmp_model", dict):
    assert "tmp_model" in MODELS
  assert "tmp_model" not in MODELS


def test_config_build_drops_fields_of_the_previous_component(caplog):
  # `--config.base.name=X` keeps the old component's knobs in the section.
  with BASES.temporary("fixed_point", lambda *, event_shape: ("fixed", event_shape)):
    out = build_lib.build(BASES, {"name": "fixed_point", "sigma": 2.0}, "base", event_shape=(2,))
  assert out == ("fixed", (2,))
  assert "ignores ['sigma']" in caplog.text


@pytest.mark.parametrize("registry", [BASES, COUPLINGS, MODELS, METHODS])
def test_registries_are_populated(registry):
  assert registry.names(), f"no {registry.kind} registered"

"""Builds datasets and methods from an experiment config.

Config layout (every section is `name` + constructor kwargs, so any argument
can be overridden with `--config.<section>.<arg>=...`):

    config.dataset   DATASETS entry -> `Populations`
    config.method    METHODS entry, wired with model/base/coupling
    config.model     MODELS entry (velocity network)
    config.base      BASES entry, wired with event_shape / cond_dim
    config.coupling  COUPLINGS entry
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Mapping

import ml_collections

from flowzoo import bases, couplings, data, methods, models  # noqa: F401  (registers)
from flowzoo.data.populations import Populations
from flowzoo.registry import BASES, COUPLINGS, DATASETS, METHODS, MODELS, Registry


def split_name(section: Mapping[str, Any], what: str) -> tuple[str, dict[str, Any]]:
  """(name, kwargs) of a config section such as `config.model`."""
  section = dict(section.to_dict() if isinstance(section, ml_collections.ConfigDict) else section)
  if "name" not in section:
    raise KeyError(f"config.{what} needs a 'name' field.")
  name = section.pop("name")
  return name, section


SECTIONS = {"dataset": DATASETS, "method": METHODS, "model": MODELS, "base": BASES,
            "coupling": COUPLINGS}
# Filled in by the framework, never from a config section.
WIRED = frozenset({"event_shape", "cond_dim", "total_steps", "num_conditions",
                   "model", "base", "coupling"})
_CONFIG_TYPES = (bool, int, float, str)


def _is_config_value(v) -> bool:
  if isinstance(v, (tuple, list)):
    return all(isinstance(x, _CONFIG_TYPES) for x in v)
  return isinstance(v, _CONFIG_TYPES)


def fill_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Writes each chosen component's constructor defaults into its section.

  Every knob of the configured components then appears in `config.json` and
  can be overridden from the command line (`--config.coupling.epsilon=0.1`),
  although the config file only named the component. Defaults that are None
  or not plain values are left out (ml_collections cannot type them).
  """
  for what, registry in SECTIONS.items():
    section = config[what]
    for key, value in registry.defaults(section.name).items():
      if key not in section and key not in WIRED and _is_config_value(value):
        section[key] = value
  return config


def resolved(config) -> ml_collections.ConfigDict:
  """A copy of `config` with every chosen component's defaults filled in.

  `--config.base.name=gaussian` on the command line swaps a component without
  writing its knobs; this is what a run stores in `config.json`, so the same
  run has the same stored config however the swap was spelled (the command
  line, or a sweep point, `sweep.apply_overrides`).
  """
  c = copy.deepcopy(config)
  with c.unlocked():
    fill_defaults(c)
  c.lock()
  return c


def build(registry: Registry, section, what: str, **wired):
  """Builds `section.name` with the section's other fields as kwargs.

  A field the chosen component does not accept but another component of the
  same kind does is dropped with a warning: that lets one override
  (`--config.model.name=unet`) swap a component while the section still holds
  the previous one's knobs. A field no component accepts is a typo: error.
  """
  name, kwargs = split_name(section, what)
  accepted = registry.accepted(name)
  if accepted is not None:
    dropped = sorted(set(kwargs) - accepted)
    anyone = registry.all_accepted()
    typos = [k for k in dropped if k not in anyone]
    if typos:
      raise KeyError(f"config.{what}: no {registry.kind} takes {typos}; {registry.kind} "
                     f"{name!r} takes {sorted(accepted - WIRED)}.")
    if dropped:
      logging.warning("config.%s: %s %r ignores %s", what, registry.kind, name, dropped)
      kwargs = {k: v for k, v in kwargs.items() if k in accepted}
  return registry.build(name, kwargs, wired=wired)


def build_dataset(config) -> Populations:
  pops = build(DATASETS, config.dataset, "dataset")
  if not isinstance(pops, Populations):
    raise TypeError(f"dataset {config.dataset.name!r} returned {type(pops).__name__}, "
                    "expected flowzoo.data.Populations.")
  return pops


def evaluation_only_keys(config) -> tuple[str, ...]:
  """Dotted config keys that change what is evaluated, never what is trained.

  A dataset constructor declares them in its `evaluation_only` attribute
  (letters: `val_letter`, since every choice has the same training
  populations). Methods see only the train split, so a run finished with one
  value may be resumed (evaluation only) with another: the checkpoint guard
  accepts the difference and the sweep trains such points once.
  """
  ctor = DATASETS.get(config.dataset.name)
  return tuple(f"dataset.{f}" for f in getattr(ctor, "evaluation_only", ()))


def build_method(config, *, event_shape, cond_dim: int, **extra):
  """Builds the method with its components for data of `event_shape`.

  `extra` (e.g. `total_steps`, `num_conditions`) is wired into every
  component whose constructor accepts it.
  """
  wired = dict(event_shape=tuple(event_shape), cond_dim=cond_dim, **extra)
  model = build(MODELS, config.model, "model", **wired)
  base = build(BASES, config.base, "base", **wired)
  coupling = build(COUPLINGS, config.coupling, "coupling", **wired)
  method = build(METHODS, config.method, "method", model=model, base=base,
                 coupling=coupling, **wired)
  method.check_data(event_shape, cond_dim)
  return method

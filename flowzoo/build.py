"""Builds a dataset and a method with its components from an experiment config.

Config layout (every section is `name` + constructor kwargs, so any argument
can be overridden with `--config.<section>.<arg>=...`; `flowzoo.config`):

    config.dataset   DATASETS entry -> `Populations`
    config.method    METHODS entry, wired with model/base/coupling
    config.model     MODELS entry (velocity network)
    config.base      BASES entry, wired with event_shape / cond_dim
    config.coupling  COUPLINGS entry
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import ml_collections

from flowzoo.config import WIRED
from flowzoo.data.populations import Populations
from flowzoo.registry import BASES, COUPLINGS, DATASETS, METHODS, MODELS, Registry


def split_name(section: Mapping[str, Any], what: str) -> tuple[str, dict[str, Any]]:
  """(name, kwargs) of a config section such as `config.model`."""
  section = dict(section.to_dict() if isinstance(section, ml_collections.ConfigDict) else section)
  if "name" not in section:
    raise KeyError(f"config.{what} needs a 'name' field.")
  name = section.pop("name")
  return name, section


def build(registry: Registry, section, what: str, *, warn_unused: bool = True, **wired):
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
                     f"{name!r} ({registry.module(name)}) takes {sorted(accepted - WIRED)}.")
    if dropped and warn_unused:
      logging.warning("config.%s: %s %r ignores %s", what, registry.kind, name, dropped)
    if dropped:
      kwargs = {k: v for k, v in kwargs.items() if k in accepted}
  return registry.build(name, kwargs, wired=wired)


def build_dataset(config) -> Populations:
  """The dataset's `Populations`; a missing file names the config field pointing at it."""
  try:
    pops = build(DATASETS, config.dataset, "dataset")
  except FileNotFoundError as e:
    missing = str(e.filename or e)
    fields = [k for k, v in config.dataset.items() if isinstance(v, str) and v and (
        v == missing or v in missing or missing in v)]
    if not fields:
      raise
    raise FileNotFoundError(
        f"{missing} does not exist: it is config.dataset.{fields[0]} of dataset "
        f"{config.dataset.name!r}; point it at your file with "
        f"--config.dataset.{fields[0]}=<path>.") from None
  if not isinstance(pops, Populations):
    raise TypeError(f"dataset {config.dataset.name!r} returned {type(pops).__name__}, "
                    "expected flowzoo.data.Populations.")
  return pops


def build_method(config, *, event_shape, cond_dim: int, warn_unused: bool = True, **extra):
  """Builds the method with its components for data of `event_shape`.

  `extra` (e.g. `total_steps`, `num_conditions`) is wired into every
  component whose constructor accepts it. The method then checks, by abstract
  evaluation (nothing is compiled), that its components fit each other and
  the data.

  Raises:
    ValueError: naming the method, base, coupling and model when they do not
      fit each other or the data.
  """
  wired = dict(event_shape=tuple(event_shape), cond_dim=cond_dim, **extra)
  quiet = dict(warn_unused=warn_unused)
  combo = (f"method {config.method.name!r} with base {config.base.name!r}, coupling "
           f"{config.coupling.name!r} and model {config.model.name!r}")
  try:
    model = build(MODELS, config.model, "model", **quiet, **wired)
    base = build(BASES, config.base, "base", **quiet, **wired)
    coupling = build(COUPLINGS, config.coupling, "coupling", **quiet, **wired)
    method = build(METHODS, config.method, "method", model=model, base=base,
                   coupling=coupling, **quiet, **wired)
    method.check_data(event_shape, cond_dim)
  except ValueError as e:
    raise ValueError(f"{combo} do not fit: {e}") from e
  return method

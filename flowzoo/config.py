"""The config layer: every rule about what an experiment config means, in one module.

A config (`ml_collections.ConfigDict`, see `experiments/configs/common.py`)
names each component by `name` plus its constructor's keyword arguments.
This module owns:

1. default filling: every chosen component's constructor defaults are
   written into its section (`fill_defaults`, `finalize`, `resolved`), so
   every knob can be overridden from the command line and is stored;
2. overrides: dotted `key=value` overrides (`apply_overrides`), where a
   section's `name` swaps the component first (its own fields may follow);
3. the stored form (`as_stored`), which differences a resumed run may
   have (`RESUME_SAFE`, `evaluation_only_keys`, `config_diff`) and when a
   stored run is this config's finished run (`finished_run`);
4. validation before anything is built (`validate`) and once data and
   method exist (`validate_built`);
5. optimizer groups (`optimizer_kwargs`, `unused_groups`);
6. the learned baselines a config runs beside itself (`baseline_arms`).

Each default is defined once: a component's in its constructor, a run's in
`experiments/configs/common.py`.
"""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections

import flowzoo  # noqa: F401  (registers every component)
from flowzoo import evaluate
from flowzoo.registry import BASES, COUPLINGS, DATASETS, METHODS, MODELS, SOLVERS

SECTIONS = {"dataset": DATASETS, "method": METHODS, "model": MODELS, "base": BASES,
            "coupling": COUPLINGS}
# Filled in by the framework, never from a config section.
WIRED = frozenset({"event_shape", "cond_dim", "total_steps", "num_conditions",
                   "population_rows", "model", "base", "coupling"})
SPLITS = ("train", "validation", "heldout")
_CONFIG_TYPES = (bool, int, float, str)

# Fields that may change between a run and its resumption without changing
# what is trained (how often to log or save, how to evaluate, which learned
# baselines run beside it). Not `train.steps`: learning-rate schedules and
# MixFlow's planner depend on it.
RESUME_SAFE = ("train.log_every", "train.ckpt_every", "train.keep_checkpoints",
               "train.steps_per_dispatch", "train.unroll", "eval", "baselines")


# -- 1. defaults ---------------------------------------------------------------------------
def _is_config_value(v) -> bool:
  if isinstance(v, (tuple, list)):
    return all(isinstance(x, _CONFIG_TYPES) for x in v)
  return isinstance(v, _CONFIG_TYPES)


def fill_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Writes each chosen component's constructor defaults into its (unlocked) section.

  A None default annotated `T | None` (T plain) becomes a typed placeholder,
  so `--config.dataset.pca_components=50` is settable; other non-plain
  defaults are left out (ml_collections cannot type them).
  """
  for what, registry in SECTIONS.items():
    section = config[what]
    optional = registry.optional_types(section.name)
    for key, value in registry.defaults(section.name).items():
      if key in section or key in WIRED:
        continue
      if _is_config_value(value):
        section[key] = value
      elif value is None and key in optional:
        section[key] = ml_collections.config_dict.placeholder(optional[key])
  return config


def finalize(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the components' default knobs, then locks so a misspelt override fails."""
  with c.unlocked():
    fill_defaults(c)
    # Every `optim` field of a group may be overridden from the command line
    # (`--config.optim_overrides.base.lr=3e-4`); unset (None) inherits `optim`.
    for group in c.optim_overrides.values():
      for key, value in c.optim.items():
        if key not in group:
          group[key] = ml_collections.config_dict.placeholder(type(value))
  c.lock()
  return c


def replace_section(c: ml_collections.ConfigDict, section: str, **fields
                    ) -> ml_collections.ConfigDict:
  """Swaps a component section of a finalized config (for derived configs)."""
  with c.unlocked():
    c[section] = ml_collections.ConfigDict(fields)
  return finalize(c)


def resolved(config) -> ml_collections.ConfigDict:
  """A locked copy of `config` with every chosen component's defaults filled in.

  What a run stores in `config.json`: the same run has the same stored
  config however a component swap was spelled (command line or override).
  """
  c = copy.deepcopy(config)
  with c.unlocked():
    fill_defaults(c)
  c.lock()
  return c


# -- 2. overrides --------------------------------------------------------------------------
def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A resolved copy of `config` with dotted `overrides` applied.

  A key must exist in the config, except inside a section whose `name` the
  same overrides change: then keys the new component accepts may be added.

  Raises:
    KeyError: naming the key and the valid fields of its section.
  """
  c = copy.deepcopy(config)
  swapped = {k.split(".")[0]: v for k, v in overrides.items()
             if k.count(".") == 1 and k.endswith(".name") and k.split(".")[0] in SECTIONS}
  with c.unlocked():
    for section, name in swapped.items():
      SECTIONS[section].get(name)  # an unknown name raises listing the valid ones
    for key, value in overrides.items():
      *path, last = key.split(".")
      node = c
      for i, p in enumerate(path):
        if p not in node:
          raise KeyError(f"override {key!r}: config{''.join('.' + q for q in path[:i])} has "
                         f"no field {p!r}; valid: {sorted(node.keys())}.")
        node = node[p]
      if last not in node:
        section = path[0] if len(path) == 1 else None
        accepted = (SECTIONS[section].accepted(swapped[section])
                    if section in swapped else None)
        if accepted is None or last not in accepted:
          where = "config" + "".join("." + q for q in path)
          raise KeyError(f"override {key!r}: {where} has no field {last!r}; valid: "
                         f"{sorted(node.keys())}"
                         + (f" (and {section} {swapped[section]!r} does not take it)."
                            if section in swapped else "."))
      if isinstance(value, list):
        value = tuple(value)
      node[last] = value
  return resolved(c)


def section_overrides(config: ml_collections.ConfigDict, other: ml_collections.ConfigDict
                      ) -> dict[str, Any]:
  """Overrides that turn `config` into `other`: each differing top-level section whole.

  For sweep points that compare whole configs (PRiMeFlow's U-Net vs its MLP,
  MixFlow vs CFM), which differ in many fields: `apply_overrides(config,
  section_overrides(config, other))` stores as `other` does.
  """
  a, b = as_stored(config.to_dict()), as_stored(other.to_dict())
  unknown = sorted(set(b) - set(a))
  if unknown:
    raise KeyError(f"section_overrides: {unknown} are not sections of the base config.")
  return {k: (other[k].to_dict() if isinstance(other[k], ml_collections.ConfigDict)
              else other[k]) for k in b if a[k] != b[k]}


def parse_overrides(text: str) -> dict[str, Any]:
  """`"a.b=1;c.d=x"` -> `{"a.b": 1, "c.d": "x"}` (values as Python literals, else strings).

  ';' separates pairs because chemical names contain commas.
  """
  out = {}
  for part in filter(None, (p.strip() for p in text.split(";"))):
    key, eq, value = part.partition("=")
    if not eq or not key.strip():
      raise ValueError(f"override {part!r} is not 'key=value'.")
    try:
      out[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      out[key.strip()] = value.strip()
  return out


def format_overrides(overrides: dict[str, Any]) -> str:
  """The inverse of `parse_overrides`: `{"a.b": 1, "c": "x"}` -> `"a.b=1;c='x'"`."""
  return ";".join(f"{k}={v!r}" for k, v in overrides.items())


# -- 3. stored form ------------------------------------------------------------------------
def as_stored(config_dict: dict) -> dict:
  """`config_dict` as `config.json` holds it (tuples become lists), for comparisons."""
  return json.loads(json.dumps(config_dict, sort_keys=True, default=str))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  """Nested dict -> `{dotted key: value}`."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_diff(old: dict, new: dict, safe: Sequence[str] = RESUME_SAFE) -> list[str]:
  """Dotted keys whose values differ, ignoring those under the `safe` prefixes.

  A component field missing from `old` that holds the component's default in
  `new` is not a difference: `old` was stored before the field existed, and
  a new field's default keeps the behaviour the component had without it
  (the project's rule for adding fields), so such a run still resumes and
  is still reused. A field only `old` has, or a non-default value, differs.
  """
  def relevant(d):
    return {k: v for k, v in flatten(d).items()
            if not any(k == s or k.startswith(s + ".") for s in safe)}
  a, b = relevant(old), relevant(new)
  return sorted(k for k in set(a) | set(b)
                if a.get(k) != b.get(k) and not (k not in a and _added_default(k, b[k], new)))


def _added_default(key: str, value: Any, config: dict) -> bool:
  """`key` ("section.field") is a field of the section's component, at its default."""
  section, _, field = key.partition(".")
  if section not in SECTIONS or "." in field or not isinstance(config.get(section), dict):
    return False
  name = config[section].get("name")
  if name not in SECTIONS[section]:
    return False
  defaults = SECTIONS[section].defaults(name)
  return field in defaults and as_stored({"v": defaults[field]})["v"] == value


def finished_run(config, workdir) -> bool:
  """True when `workdir` holds the evaluation of a finished run of `config`.

  Its `eval.json` exists and its `config.json` matches `config` up to the
  fields a resumed run may change (`RESUME_SAFE`), except the evaluation
  settings (`eval`), which must be equal: a finished run's results are then
  exactly what evaluating it again would give, and are reused (sweeps,
  reruns, baseline arms).
  """
  cfg, ev = Path(workdir) / "config.json", Path(workdir) / "eval.json"
  if not (cfg.is_file() and ev.is_file()):
    return False
  old, new = json.loads(cfg.read_text()), as_stored(resolved(config).to_dict())
  return not config_diff(old, new) and new.get("eval") == old.get("eval")


def evaluation_only_keys(config) -> tuple[str, ...]:
  """Dotted config keys that change what is evaluated, never what is trained.

  A dataset constructor declares them in its `evaluation_only` attribute
  (letters: `val_letter`, since every choice has the same training
  populations), so a finished run may be re-evaluated with another value.
  """
  ctor = DATASETS.get(config.dataset.name)
  return tuple(f"dataset.{f}" for f in getattr(ctor, "evaluation_only", ()))


# -- 4. validation -------------------------------------------------------------------------
def parse_select(select: str) -> tuple[str, str] | None:
  """`eval.select` as `(split, metric)`; None for "" (evaluate the last checkpoint).

  MixFlow §5.1 reports every metric at "the best checkpoint based on
  validation Wasserstein-2 distance": `eval.select="heldout/w2"` scores each
  kept checkpoint by the split mean of that metric and evaluates the best.
  """
  if not select:
    return None
  parts = select.split("/")
  if len(parts) != 2 or not all(parts):
    raise ValueError(f"config.eval.select must be 'split/metric' (e.g. 'heldout/w2') or '', "
                     f"got {select!r}.")
  return parts[0], parts[1]


def validate(config) -> None:
  """Cross-field checks that must fail before anything is built."""
  t, ev = config.train, config.eval
  for name, v in (("train.steps_per_dispatch", t.steps_per_dispatch),
                  ("train.log_every", t.log_every), ("train.ckpt_every", t.ckpt_every),
                  ("train.keep_checkpoints", t.keep_checkpoints),
                  ("data.batch_size", config.data.batch_size),
                  ("data.populations_per_batch", config.data.populations_per_batch),
                  ("eval.num_steps", ev.num_steps), ("eval.max_samples", ev.max_samples),
                  ("eval.chunk", ev.chunk)):
    if v < 1:
      raise ValueError(f"config.{name} must be >= 1, got {v}.")
  if not 0.0 <= t.ema_decay < 1.0:
    raise ValueError(f"config.train.ema_decay must be in [0, 1), got {t.ema_decay}.")
  for name in ("log_every", "ckpt_every", "steps"):
    if t[name] % t.steps_per_dispatch:
      raise ValueError(f"config.train.{name}={t[name]} must be a multiple of "
                       f"config.train.steps_per_dispatch={t.steps_per_dispatch}.")
  if t.steps <= 0:
    raise ValueError(f"config.train.steps must be > 0, got {t.steps}.")
  evaluate.check_samples_per_condition(ev.samples_per_condition)
  bad = [s for s in ev.splits if s not in SPLITS]
  if bad:
    raise ValueError(f"config.eval.splits: unknown split(s) {bad}; valid: {list(SPLITS)}.")
  SOLVERS.get(ev.solver)  # raises listing the valid solvers
  baseline_arms(config)  # parses, and checks each arm's overrides
  if parse_select(ev.select):
    saves = -(-t.steps // t.ckpt_every)  # every ckpt_every steps, and the last step
    if t.keep_checkpoints < saves:
      raise ValueError(
          f"config.eval.select={ev.select!r} picks among the kept checkpoints, but "
          f"config.train.keep_checkpoints={t.keep_checkpoints} keeps only the last "
          f"{t.keep_checkpoints} of the {saves} saved; set it to >= {saves}.")


def validate_built(config, pops, valid_metrics: Sequence[str]) -> None:
  """Checks of `eval` that need the dataset and the method's metric names."""
  ev = config.eval
  unknown = sorted(set(ev.metrics) - set(valid_metrics))
  if unknown:
    raise KeyError(f"config.eval.metrics: unknown metric(s) {unknown}; valid: "
                   f"{list(valid_metrics)}.")
  # Splits the data lack are skipped (the common default lists all three).
  if not any(pops.has_split(s) for s in ev.splits):
    raise ValueError(f"config.eval.splits={tuple(ev.splits)}: dataset {config.dataset.name!r} "
                     f"has none of them (it has {sorted(set(pops.splits))}).")
  select = parse_select(ev.select)
  if select is None:
    return
  split, metric = select
  if not pops.has_split(split):
    raise ValueError(f"config.eval.select={ev.select!r}: dataset "
                     f"{config.dataset.name!r} has no {split!r} split.")
  if metric not in valid_metrics:
    raise KeyError(f"config.eval.select={ev.select!r}: unknown metric {metric!r}; "
                   f"valid: {list(valid_metrics)}.")


# -- 5. optimizer groups -------------------------------------------------------------------
def set_overrides(config, group: str) -> dict:
  """Fields of `optim_overrides.<group>` that are set (None inherits `optim`)."""
  return {k: v for k, v in config.optim_overrides.get(group, {}).items() if v is not None}


def optimizer_kwargs(config, group: str) -> dict:
  """`config.optim` updated by the fields of `optim_overrides.<group>` that are set."""
  return dict(config.optim) | set_overrides(config, group)


def unused_groups(config, groups: Sequence[str]) -> list[str]:
  """Groups with overrides set that the method does not have (e.g. `base` for CFM)."""
  return sorted(g for g in set(config.optim_overrides) - set(groups) if set_overrides(config, g))


# -- 6. learned baselines run beside the config --------------------------------------------
def describe(config) -> str:
  """What a config trains, by its components: "mixflow, base gmm, coupling exact, model mlp"."""
  return (f"{config.method.name}, base {config.base.name}, coupling {config.coupling.name}, "
          f"model {config.model.name}")


def baseline_arms(config) -> dict[str, ml_collections.ConfigDict]:
  """`{arm name: config}` for `config.baselines` (name -> "key=value;..." overrides).

  A config that compares its method with learned baselines (the main job:
  MixFlow vs its CFM twin) lists them here; `experiments.run` trains and
  evaluates each beside the config and prints one table. Each arm's config
  is this config with the overrides applied and no baselines of its own.
  """
  arms = {}
  for name, text in (config.get("baselines") or {}).items():
    if not text:  # `--config.baselines.<name>=` switches an arm off
      continue
    try:
      overrides = dict(parse_overrides(text), baselines={})
      arms[name] = apply_overrides(config, overrides)
    except (KeyError, ValueError) as e:
      raise ValueError(f"config.baselines.{name} = {text!r}: "
                       f"{e.args[0] if e.args else e}") from None
  return arms

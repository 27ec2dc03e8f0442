"""Name -> constructor registries for every interchangeable component.

Components are chosen in configs by ``name`` plus a kwargs ``ConfigDict``; the
registry turns that pair into an object. The config stops at the constructor:
components take plain keyword arguments and never see a ``ConfigDict``.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from typing import Any, Callable, Iterator, Mapping


class Registry:
  """A named collection of constructors with helpful errors.

  Example:
    >>> MODELS = Registry("model")
    >>> @MODELS.register("mlp")
    ... class MLP: ...
    >>> MODELS.build("mlp", **kwargs)
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, Callable[..., Any]] = {}

  def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` under ``name``; a duplicate name raises."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
      if name in self._entries:
        raise KeyError(
            f"{self.kind} {name!r} is already registered "
            f"(by {self._entries[name].__module__})."
        )
      self._entries[name] = fn
      return fn

    return decorator

  def get(self, name: str) -> Callable[..., Any]:
    """Returns the constructor for ``name`` or raises listing the valid names."""
    try:
      return self._entries[name]
    except KeyError:
      close = difflib.get_close_matches(str(name), self._entries, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise KeyError(
          f"Unknown {self.kind} {name!r}.{hint} Valid {self.kind} names (defining module): "
          f"{self.describe()}."
      ) from None

  def build(self, name: str, kwargs: Mapping[str, Any] | None = None, *,
            wired: Mapping[str, Any] | None = None) -> Any:
    """Constructs ``name`` from config ``kwargs`` plus ``wired`` values.

    ``wired`` holds what the framework knows and the user does not set (the
    data's event shape, the descriptor size, sub-components); each is passed
    only if the constructor accepts it. Keyword names are checked against the
    constructor's signature first, so a misspelt argument fails here with the
    list of accepted ones.
    """
    ctor = self.get(name)
    kwargs = dict(kwargs or {})
    accepted = _accepted(ctor)
    for key, value in (wired or {}).items():
      if accepted is None or key in accepted:
        kwargs.setdefault(key, value)
    _check_kwargs(ctor, kwargs, f"{self.kind} {name!r}")
    return ctor(**kwargs)

  def accepted(self, name: str) -> set[str] | None:
    """Keyword arguments `name` accepts (None: anything)."""
    return _accepted(self.get(name))

  def all_accepted(self) -> set[str]:
    """Union of the keyword arguments of every registered constructor."""
    out = set()
    for fn in self._entries.values():
      out |= _accepted(fn) or set()
    return out

  def defaults(self, name: str) -> dict[str, Any]:
    """Keyword arguments of `name` that have defaults, with those defaults."""
    try:
      params = inspect.signature(self.get(name)).parameters
    except (TypeError, ValueError):
      return {}
    return {n: p.default for n, p in params.items()
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in ("parent", "name")}

  def optional_types(self, name: str) -> dict[str, type]:
    """Keyword arguments of `name` defaulting to None whose annotation is `T | None`
    for a plain T (int, float, str, bool): name -> T (so a config can type them)."""
    plain = {"int": int, "float": float, "str": str, "bool": bool}
    try:
      params = inspect.signature(self.get(name)).parameters
    except (TypeError, ValueError):
      return {}
    out = {}
    for n, p in params.items():
      ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
      parts = [a.strip() for a in str(ann).split("|")]
      if p.default is None and len(parts) == 2 and "None" in parts:
        t = plain.get(parts[0] if parts[1] == "None" else parts[1])
        if t is not None:
          out[n] = t
    return out

  def names(self) -> list[str]:
    return sorted(self._entries)

  def module(self, name: str) -> str:
    """The module that defines `name` (where to read its code)."""
    return getattr(self.get(name), "__module__", "?")

  def describe(self) -> str:
    """`name (module), ...` for every entry: a name leads to its file."""
    return ", ".join(f"{n} ({self.module(n)})" for n in self.names())

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  @contextlib.contextmanager
  def temporary(self, name: str, fn: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Registers ``fn`` for the duration of a ``with`` block (for tests)."""
    self.register(name)(fn)
    try:
      yield fn
    finally:
      del self._entries[name]


def _accepted(ctor: Callable[..., Any]) -> set[str] | None:
  """Keyword names `ctor` accepts, or None if it takes **kwargs / is opaque."""
  try:
    params = inspect.signature(ctor).parameters
  except (TypeError, ValueError):  # builtins without a signature: let the call decide.
    return None
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return None
  accepted = {n for n, p in params.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
  # flax modules expose `parent` and `name` as dataclass fields; not config knobs.
  return accepted - {"parent", "name"}


def _check_kwargs(ctor: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
  accepted = _accepted(ctor)
  if accepted is None:
    return
  unknown = sorted(set(kwargs) - accepted)
  if unknown:
    raise TypeError(
        f"{what} got unknown argument(s) {unknown}; accepted: {sorted(accepted)}."
    )


BASES = Registry("base")
COUPLINGS = Registry("coupling")
MODELS = Registry("model")
METHODS = Registry("method")
DATASETS = Registry("dataset")
SOLVERS = Registry("solver")

ALL = {"dataset": DATASETS, "method": METHODS, "model": MODELS, "base": BASES,
       "coupling": COUPLINGS, "solver": SOLVERS}


def catalogue() -> str:
  """Every registered component, one kind per line, with its defining module."""
  return "\n".join(f"  {kind}s: {reg.describe()}" for kind, reg in ALL.items())

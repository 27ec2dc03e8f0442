"""Swap safety: what no single combination shows (the grid itself: tests/test_swaps_*.py)."""

import pytest

from flowzoo.config import apply_overrides
from flowzoo.experiment import setup
from flowzoo.registry import METHODS
from tests.swap_grid import GRID, config_for


def test_grid_covers_every_method():
  assert {g[0] for g in GRID} == set(METHODS.names())
  assert len(GRID) == len(set(GRID))


def test_entropic_map_is_refused_before_compiling():
  """The issue's case: `--config.coupling.name=entropic_map` on cfm_letters."""
  from experiments.configs import cfm_letters  # pylint: disable=import-outside-toplevel
  config = apply_overrides(cfm_letters.get_config("runlocal"), {"coupling.name": "entropic_map"})
  with pytest.raises(ValueError, match=r"coupling 'entropic_map'.*is a transport map"):
    setup(config)


@pytest.mark.fast
@pytest.mark.parametrize("method, base", [("cfm", "wishart"), ("bwfm", "gaussian"),
                                          ("wfm", "gmm"), ("mixflow", "gaussian_clouds")])
def test_state_space_mismatch_is_refused(method, base):
  config = apply_overrides(config_for(method, "empirical", "independent", "mlp"), {"base.name": base})
  with pytest.raises(ValueError, match=rf"method '{method}' with base '{base}'.* do not fit"):
    setup(config)

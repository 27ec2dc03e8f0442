"""Swap safety of `cfm`: each combination trains or is refused naming it (tests/swap_grid.py).

One file per method so that the parallel workers share the grid's compiles.
"""

import pytest

from tests import swap_grid


@pytest.mark.parametrize("method, base, coupling, model", swap_grid.params("cfm"))
def test_combination_trains_or_is_refused_naming_it(method, base, coupling, model):
  swap_grid.check_combination(method, base, coupling, model)

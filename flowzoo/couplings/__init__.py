"""Couplings pair source samples with target samples.

Interface shared by every *plan* coupling (one implementation for both levels:
samples within a minibatch, or points within a pair of point clouds)::

    i, j = coupling(rng, x0, x1, *, groups=None, mask0=None, mask1=None)

* `x0` `[n, *event]` source and `x1` `[m, *event]` target samples (the cost
  is computed on the flattened event, squared Euclidean unless the coupling
  was built with another cost).
* `groups` `[n]` int labels shared by x0[k] and x1[k] (the condition of the
  k-th row in a minibatch); a group-restricted coupling pairs only within a group.
* `mask0` `[n]`, `mask1` `[m]` bool: padded rows take no part.
* Returns index arrays `i`, `j` `[n]`: pair k is `(x0[i[k]], x1[j[k]])`. The
  caller gathers every target-side field (descriptor, group) with `j`, so a
  coupling that reorders targets keeps conditions attached to their samples.
"""

from flowzoo.couplings import independent  # noqa: F401  (registers)
from flowzoo.couplings import sinkhorn  # noqa: F401  (registers)
from flowzoo.couplings import rounding  # noqa: F401  (registers)
from flowzoo.couplings import exact  # noqa: F401  (registers)
from flowzoo.couplings import entropic_map  # noqa: F401  (registers)

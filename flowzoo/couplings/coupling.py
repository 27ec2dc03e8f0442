"""What every coupling declares about itself (methods read these; nothing is probed).

Plan couplings are called as `coupling(rng, x0, x1, *, groups, mask0, mask1[, cost])`
and return index pairs (see `flowzoo.couplings`).
"""


class Coupling:
  """Declared capabilities of a coupling.

  Attributes:
    is_map: a transport map `T(x)` (`transport(x0, x1)`), not an index
      pairing; methods that pair samples refuse it.
    keeps_order: pairs row k with row k (the independent coupling): methods
      skip computing a cost for it.
    accepts_cost: takes a precomputed `cost` `[n, m]` (e.g. the Fréchet cost
      between Gaussians, WFM App. C).
  """

  is_map: bool = False
  keeps_order: bool = False
  accepts_cost: bool = True

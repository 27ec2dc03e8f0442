"""flowzoo: flow-matching methods of computational-biology papers as plugins.

Importing the package registers every component (`flowzoo.registry`): bases,
couplings, velocity networks, methods, datasets and ODE solvers.
"""

from flowzoo import sampling  # noqa: F401  (registers the fixed-step and adaptive solvers)
from flowzoo import geometry  # noqa: F401  (registers "euler_bw")
from flowzoo import bases, couplings, data, methods, models  # noqa: F401  (register)

"""Velocity networks; importing the package registers every model.

Shared call signature: see `flowzoo.models.mlp` module docstring.
"""

from flowzoo.models import mlp  # noqa: F401
from flowzoo.models import unet  # noqa: F401
from flowzoo.models import transformer  # noqa: F401

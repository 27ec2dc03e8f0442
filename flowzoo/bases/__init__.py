"""Source distributions; importing the package registers every base."""

from flowzoo.bases import gaussian  # noqa: F401
from flowzoo.bases import mixture  # noqa: F401
from flowzoo.bases import pointclouds  # noqa: F401
from flowzoo.bases import empirical  # noqa: F401
from flowzoo.bases import bures  # noqa: F401  (registers wishart)

"""Flow-matching methods (plugins); importing the package registers them."""

from flowzoo.methods import cfm  # noqa: F401
from flowzoo.methods import mixflow  # noqa: F401
from flowzoo.methods import wfm  # noqa: F401
from flowzoo.methods import bwfm  # noqa: F401

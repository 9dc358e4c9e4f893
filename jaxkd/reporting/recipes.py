"""Moved to `jaxkd.config.recipes`; this name stays the same module, for existing table
configs (``from jaxkd.reporting import recipes``)."""
import sys

from jaxkd.config import recipes as _recipes

sys.modules[__name__] = _recipes

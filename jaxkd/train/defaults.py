"""Moved to `jaxkd.config.defaults`; this name stays the same module, for existing config files
(``from jaxkd.train.defaults import get_config``)."""
import sys

from jaxkd.config import defaults as _defaults

sys.modules[__name__] = _defaults

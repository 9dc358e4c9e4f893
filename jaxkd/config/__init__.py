"""One home for configuration: config files and overrides, the defaults, the shared recipes.

* the loader (`load`, `override`, `split_overrides`, `check_keys`) and the errors of bad input
  (`ConfigError`: a config value that cannot run; `UsageError`: bad command-line input);
* `defaults`: the base config every config extends (`default`) and the default run
  (``configs/default.py``);
* `recipes`: the training recipes the table configs share, and their smoke switch.

It imports no other layer of jaxkd (nor jax): everything above reads configs through it.
"""
from jaxkd.config import defaults
from jaxkd.config import recipes
from jaxkd.config._loader import (ConfigError, UsageError, check_keys, default, did_you_mean,
                                  load, load_module, override, split_overrides)

__all__ = ["ConfigError", "UsageError", "check_keys", "default", "defaults", "did_you_mean",
           "load", "load_module", "override", "recipes", "split_overrides"]

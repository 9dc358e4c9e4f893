"""jaxkd: label smoothing, knowledge distillation and self-distillation for JAX/Flax.

Layers (imports only go downward): ``targets`` -> ``losses`` -> ``objectives`` ->
``models`` / ``data`` / ``analysis`` -> ``tasks`` -> ``train`` -> ``cli``. ``config`` (config
files and overrides, the defaults, the shared recipes, ``ConfigError``; no jax) sits below them
all and imports none of them.
"""
__version__ = "0.1.0"

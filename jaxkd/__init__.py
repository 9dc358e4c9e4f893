"""jaxkd: label smoothing, knowledge distillation and self-distillation for JAX/Flax.

Layers (imports only go downward): ``targets`` -> ``losses`` -> ``objectives`` ->
``models`` / ``data`` / ``analysis`` -> ``tasks`` -> ``train`` -> ``cli``. ``config`` (config files and
overrides, no jax) serves ``train``, ``reporting`` and ``cli``; only its ``default()`` reaches up
into ``train.defaults``, at call time.
"""
__version__ = "0.1.0"

"""jaxkd: label smoothing, knowledge distillation and self-distillation for JAX/Flax.

Layers (imports only go downward): ``targets`` -> ``losses`` -> ``objectives`` ->
``models`` / ``data`` -> ``train`` -> ``analysis`` -> ``cli``.
"""
__version__ = "0.1.0"

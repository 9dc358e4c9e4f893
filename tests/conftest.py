"""Test session setup: 8 simulated CPU devices, so sharding tests run in one process.

Single-device tests are unaffected (jit places work on device 0); mesh tests pick
`jax.devices()[:n]`. Must run before jax is imported anywhere.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

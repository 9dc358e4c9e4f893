"""Test session setup, done before jax is imported anywhere.

- 8 simulated CPU devices, so sharding tests run in one process. Single-device tests are
  unaffected (jit places work on device 0); mesh tests pick `jax.devices()[:n]`.
- A persistent compilation cache shared by the tests and the `jaxkd train` subprocesses they
  start: many tests compile the same small programs (the default config's steps), and a cache
  hit turns seconds of XLA compilation into a file read. The cache key covers the program,
  the devices and the jax version, so results are unchanged.
"""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "jaxkd-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

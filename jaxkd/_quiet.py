"""Silencing one known, misleading log line of a dependency, where jaxkd knows it is noise.

orbax logs "Metadata file does not exist" for every checkpoint written without its optional
metadata file (ours are read fine), and tfds logs "Variant folder ... has no dataset_info.json"
just before jaxkd reports the missing dataset in its own words. Both go through absl's logger.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

__all__ = ["ORBAX_NO_METADATA", "TFDS_NO_VARIANT_INFO", "without_absl_lines"]

# The log calls' format strings, as the libraries write them.
ORBAX_NO_METADATA = "Metadata file does not exist: %s"
TFDS_NO_VARIANT_INFO = "Variant folder %s has no %s"


class _Drop(logging.Filter):

  def __init__(self, formats: tuple[str, ...]):
    super().__init__()
    self.formats = formats

  def filter(self, record: logging.LogRecord) -> bool:
    return record.msg not in self.formats


@contextlib.contextmanager
def without_absl_lines(*formats: str) -> Iterator[None]:
  """Drops absl log records whose format string is one of ``formats``, inside the block only."""
  drop, logger = _Drop(formats), logging.getLogger("absl")
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)

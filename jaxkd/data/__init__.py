"""Classification data: named datasets, deterministic order, on-device augmentation.

``load(name, split)`` gives an in-memory ``ArrayDataset`` (uint8 images, int32
labels, ids = positions); ``batch_indices`` fixes the order from (seed, epoch);
``device_augment`` and ``normalize`` run inside the jitted step; ``open_cache`` reads a
teacher's outputs stored for every step of a run (``jaxkd cache-teacher``); ``open_stream``
reads datasets too large for memory (ImageNet) through grain, in the same order. Text
datasets load as a ``TokenDataset`` (int32 token ids, 0 = padding; see ``_text.py``), translation
corpora as a ``ParallelDataset`` batched by token count (``_translation.py``).
"""
from jaxkd.data._augment import AugmentParams, device_augment, normalize
from jaxkd.data._dataset import ArrayDataset, DatasetNotFoundError, from_arrays, mock
from jaxkd.data._decode import DecodeError
from jaxkd.data._order import batch_indices, partner_indices
from jaxkd.data._prepare import prepare_imagenet2012
from jaxkd.data._registry import DatasetSpec, load, names, parse_split, spec, token_settings
from jaxkd.data._streaming import RecordError, StreamingSplit, epoch_order, open_stream
from jaxkd.data._teacher_cache import (CACHE_MANIFEST, CACHE_RUN_FIELDS, cache_run_key,
                                       cache_run_mismatches, create_cache, finish_cache,
                                       open_cache)
from jaxkd.data._text import TokenDataset, mock_text, read_csv
from jaxkd.data._translation import PAD, ParallelDataset, Vocabulary, mock_translation

__all__ = [
    "CACHE_MANIFEST",
    "CACHE_RUN_FIELDS",
    "ArrayDataset",
    "AugmentParams",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DecodeError",
    "batch_indices",
    "cache_run_key",
    "cache_run_mismatches",
    "create_cache",
    "finish_cache",
    "open_cache",
    "device_augment",
    "epoch_order",
    "from_arrays",
    "load",
    "mock",
    "names",
    "normalize",
    "parse_split",
    "partner_indices",
    "prepare_imagenet2012",
    "open_stream",
    "RecordError",
    "spec",
    "StreamingSplit",
    "TokenDataset",
    "PAD",
    "ParallelDataset",
    "Vocabulary",
    "mock_text",
    "mock_translation",
    "read_csv",
    "token_settings",
]

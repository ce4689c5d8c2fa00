"""The HDF5 feature cache: layout, reading, and crash-safe writing through a journal.

Layout version 2 (docs/CONTRACTS.md has the full contract and its failure analysis)::

    CACHE.h5                  the index, small, rewritten whole and renamed into place by each commit
      /                       attrs featx_layout_version=2, featx_version
      /samples/id|path|group|split|duplicate_of   str, virtual datasets over the samples shards
      /samples/label          int64 (-1 = unknown), virtual; attr class_names (JSON list)
      /features/<name>        float32 [n, d], virtual; attrs config (JSON), kind, requests
      /features/<name>_ok     bool [n], virtual: row computed (and finite)
      /failures/path|reason|stage   str
      /blocks/start|stop      int64: row ranges; /shards/block|what|file: which shard holds what
    CACHE.h5.shards/          immutable shard files, one per (block, samples) and (block, set)

Bare h5py reads ``f["features/<name>"]`` as an (n, d) dataset, rows aligned with ``/samples``,
exactly as in layout 1 (a single file with the same datasets stored in it). Layout-1 caches are
read as they are and migrated once, on their first write.

Extraction appends each batch's results to a journal folder beside the cache
(``CACHE.h5.journal/``), one file per batch renamed into place; ``commit`` writes shards for what
the records add, then swaps in a new index, then removes the records. Applying a record twice adds
nothing, so a crash at any point is recovered by the next run's commit. A lock file
(``CACHE.h5.lock``, an fcntl lock that dies with its process) keeps two writers apart.
"""
from __future__ import annotations

from featx.cache.base import (CacheLock, config_json, journal_dir, lock_path, open_read, reading, shards_dir,
                              str_dtype)
from featx.cache.committing import commit, layout_version, migrate_v1
from featx.cache.compaction import compact, copy_cache
from featx.cache.journal import (BatchRecord, Journal, SetRows, load_rows, pending_records, quarantine_dir,
                                 read_record)
from featx.cache.read import CacheState, list_sets, load_features, parse_sets, read_memo, read_state
from featx.check import LAYOUT_VERSION
from featx.errors import CacheError, CacheLockedError
from featx.table import FeatureTable

__all__ = ["BatchRecord", "CacheError", "CacheLock", "CacheLockedError", "CacheState", "FeatureTable", "Journal",
           "LAYOUT_VERSION", "SetRows", "commit", "compact", "config_json", "copy_cache", "journal_dir",
           "layout_version", "list_sets", "load_features", "load_rows", "lock_path", "migrate_v1", "open_read",
           "parse_sets", "pending_records", "quarantine_dir", "read_memo", "read_record", "read_state", "reading",
           "shards_dir", "str_dtype"]

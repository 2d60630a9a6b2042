"""Serving many callers from one model: dynamic batching and a result cache.

:class:`DynamicBatcher` merges concurrent requests into batched backend
calls; :class:`ResultCache` answers repeated requests from memory. Both sit
on a loaded :class:`~edge_sdk.Runtime` and import nothing beyond numpy.
"""

from __future__ import annotations

from ..errors import OverloadedError
from .batcher import BatcherConfig, DynamicBatcher
from .cache import ResultCache

__all__ = ["BatcherConfig", "DynamicBatcher", "OverloadedError", "ResultCache"]

"""Pools of models: the offline Tiny-8 zoo, and real CLIP pools defined by JSON files. A pool
offers a pre-trained tower, fine-tuned towers, heads, pre-processing and data; it never knows
about methods or runs.

May import: ``model``, ``sources`` (never ``merging`` or ``running``).
"""
from __future__ import annotations

from .base import Availability, Pool, PoolInfo, TaskInfo
from .registry import list_pools, load_pool

__all__ = ["Availability", "Pool", "PoolInfo", "TaskInfo", "list_pools", "load_pool"]

"""Finding pools: ``tiny8`` (shipped, offline) and one JSON file per real pool in
``assets/pools/`` (plus any folder named by ``WEMOE_POOL_DIR``); add a pool by adding a file.
``WEMOE_TINY8_DIR`` points at another Tiny-8 build (e.g. a quick one made for tests)."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from .base import Availability, Pool

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TINY8 = "tiny8"


def pool_dirs() -> list[Path]:
    dirs = [ASSETS / "pools"]
    extra = os.environ.get("WEMOE_POOL_DIR")
    if extra:
        dirs.append(Path(extra))
    return dirs


def _json_specs() -> dict[str, Path]:
    out = {}
    for d in pool_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                out.setdefault(p.stem, p)
    return out


@dataclass(frozen=True)
class PoolEntry:
    name: str
    title: str
    availability: Availability


def list_pools() -> list[PoolEntry]:
    """Every known pool with whether it can be used here, and why not."""
    entries = [PoolEntry(TINY8, load_pool(TINY8).info.title, Availability(True))]
    for name in _json_specs():
        try:
            pool = load_pool(name)
            entries.append(PoolEntry(name, pool.info.title, pool.availability()))
        except (ValueError, OSError) as e:
            entries.append(PoolEntry(name, name, Availability(False, f"invalid pool file: {e}")))
    return entries


@functools.lru_cache(maxsize=8)
def load_pool(name: str) -> Pool:
    """A pool by name (``tiny8`` or the stem of a JSON file). Pools are read-only and cached."""
    if name == TINY8:
        from .tiny8.pool import Tiny8Pool

        return Tiny8Pool(Path(os.environ.get("WEMOE_TINY8_DIR") or ASSETS / "tiny8"))
    specs = _json_specs()
    if name not in specs:
        raise ValueError(f"unknown pool {name!r}; known pools: {', '.join([TINY8, *specs])}")
    from .clip import ClipPool

    return ClipPool.from_file(specs[name])

"""The server's door for paths. The library reads whatever path its caller names; a visitor is
not that caller, so everything a visitor can make the server read is confined here:

- a **pool** (by name, from the page or ``/merge``): every local model file the pool names must
  lie inside ``$WEMOE_MODEL_DIR`` and every local image folder inside ``$WEMOE_DATA_DIR``
  (``../``, absolute paths elsewhere and symlinks leading out are refused), checked before the
  pool is used and when pools are listed;
- an **uploaded image**: Gradio hands our callbacks only files a visitor uploaded into its own
  cache (a request naming a server path is refused before our code runs; see
  ``tests/reliability/test_security.py``).

Refusals name neither the server's folders nor its files: the log keeps those.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from wemoe_core.sources import paths

log = logging.getLogger(__name__)


def _may_be_local(given: str, root: Path) -> bool:
    """Whether a pool's source can be read as a local path (the library reads it as one when
    something exists there; ``..`` and absolute paths are never Hub ids or open_clip tags)."""
    p = Path(given).expanduser()
    return p.is_absolute() or ".." in p.parts or os.path.lexists(paths.resolve(p, root))


def check_pool(pool) -> None:
    """A ValueError if ``pool`` names a local file or folder outside the server's folders."""
    for kind, given in pool.local_files():
        root, env = ((paths.model_root(), paths.MODEL_DIR_ENV) if kind == "model"
                     else (paths.data_root(), paths.DATA_DIR_ENV))
        if not _may_be_local(given, root):
            continue
        try:
            paths.confine(given, root, what=f"{kind} path", env=env)
        except ValueError as e:
            log.warning("pool %s refused for visitors: %s", pool.name, e)
            raise ValueError(f"pool {pool.info.title!r} cannot be used on this server: it names a {kind} file "
                             f"outside the server's {kind} folder (${env}). Ask the operator to move it there.") from None

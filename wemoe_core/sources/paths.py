"""Where local files may come from, and where caches go.

Paths that a user types (a checkpoint folder, a folder of images) are confined to a root
directory, so that ``../`` or an absolute path elsewhere on the machine is refused:

- models: ``$WEMOE_MODEL_DIR``, default ``./models`` (relative to the working directory);
- data:   ``$WEMOE_DATA_DIR``,  default ``./data``.

Relative paths are read relative to the root; absolute paths must lie inside it (after symlinks
are resolved). Caches (zero-shot heads) go to ``$WEMOE_CACHE_DIR``, default
``~/.cache/wemoe_explorer``.
"""
from __future__ import annotations

import os
from pathlib import Path

MODEL_DIR_ENV = "WEMOE_MODEL_DIR"
DATA_DIR_ENV = "WEMOE_DATA_DIR"
CACHE_DIR_ENV = "WEMOE_CACHE_DIR"


def model_root() -> Path:
    """The folder local checkpoints must live in."""
    return Path(os.environ.get(MODEL_DIR_ENV) or Path.cwd() / "models").expanduser().resolve()


def data_root() -> Path:
    """The folder local image folders and zips must live in."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.cwd() / "data").expanduser().resolve()


def cache_root() -> Path:
    """Where computed artefacts (zero-shot heads) are cached."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "wemoe_explorer").expanduser()


def confine(path: str | os.PathLike, root: str | os.PathLike, *, what: str = "file", env: str = MODEL_DIR_ENV) -> Path:
    """``path`` resolved inside ``root``; a ValueError if it points outside (``..``, an absolute
    path elsewhere, a symlink leading out). Existence is not checked here."""
    root = Path(root).expanduser().resolve()
    p = Path(path).expanduser()
    full = (p if p.is_absolute() else root / p).resolve()
    if full != root and not full.is_relative_to(root):
        raise ValueError(f"the {what} {str(path)!r} lies outside the allowed folder {root}; "
                         f"move it there or point ${env} at the folder that holds it")
    return full


def local_model_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A user-given checkpoint path, confined to :func:`model_root` (or ``root``), which must exist."""
    full = confine(path, root or model_root(), what="model path", env=MODEL_DIR_ENV)
    if not full.exists():
        raise FileNotFoundError(f"no checkpoint at {full} (from {str(path)!r}); "
                                f"local models are looked up under {root or model_root()}")
    return full


def local_data_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A user-given image folder or zip, confined to :func:`data_root` (or ``root``), which must exist."""
    full = confine(path, root or data_root(), what="data path", env=DATA_DIR_ENV)
    if not full.exists():
        raise FileNotFoundError(f"no images at {full} (from {str(path)!r}); "
                                f"local data are looked up under {root or data_root()}")
    return full

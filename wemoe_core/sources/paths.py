"""Where local files come from, and where caches go.

The library takes the paths it is given: a Python caller or the command line may name any
checkpoint or image folder on the machine. Relative paths are read relative to a root folder:

- models: ``$WEMOE_MODEL_DIR``, default ``./models`` (relative to the working directory);
- data:   ``$WEMOE_DATA_DIR``,  default ``./data``.

Confinement (refusing ``../``, absolute paths elsewhere and symlinks leading out) protects a
server from its visitors, so it happens at that door (``app/confine.py``) with :func:`confine`;
the library itself confines only what a file names on its own, such as the shards of a sharded
checkpoint's index. Caches (zero-shot heads) go to ``$WEMOE_CACHE_DIR``, default
``~/.cache/wemoe_explorer``.
"""
from __future__ import annotations

import os
from pathlib import Path

MODEL_DIR_ENV = "WEMOE_MODEL_DIR"
DATA_DIR_ENV = "WEMOE_DATA_DIR"
CACHE_DIR_ENV = "WEMOE_CACHE_DIR"


def model_root() -> Path:
    """The folder relative checkpoint paths are read from."""
    return Path(os.environ.get(MODEL_DIR_ENV) or Path.cwd() / "models").expanduser().resolve()


def data_root() -> Path:
    """The folder relative image folders and zips are read from."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.cwd() / "data").expanduser().resolve()


def cache_root() -> Path:
    """Where computed artefacts (zero-shot heads) are cached."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "wemoe_explorer").expanduser()


def resolve(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``path`` as given when absolute, else relative to ``root``; ``~`` expanded."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root).expanduser() / p


def confine(path: str | os.PathLike, root: str | os.PathLike, *, what: str = "file", env: str = MODEL_DIR_ENV) -> Path:
    """``path`` resolved inside ``root``; a ValueError if it points outside (``..``, an absolute
    path elsewhere, a symlink leading out). Existence is not checked here."""
    root = Path(root).expanduser().resolve()
    full = resolve(path, root).resolve()
    if full != root and not full.is_relative_to(root):
        raise ValueError(f"the {what} {str(path)!r} lies outside the allowed folder {root}; "
                         f"move it there or point ${env} at the folder that holds it")
    return full


def local_model_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A checkpoint file or folder that must exist: ``path`` itself when absolute, else under
    ``root`` (default :func:`model_root`)."""
    base = root or model_root()
    full = resolve(path, base)
    if not full.exists():
        raise FileNotFoundError(f"no checkpoint at {full} (from {str(path)!r}); "
                                f"relative paths are looked up under {base}")
    return full


def local_data_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """An image folder, zip or parquet file that must exist: ``path`` itself when absolute,
    else under ``root`` (default :func:`data_root`)."""
    base = root or data_root()
    full = resolve(path, base)
    if not full.exists():
        raise FileNotFoundError(f"no images at {full} (from {str(path)!r}); "
                                f"relative paths are looked up under {base}")
    return full

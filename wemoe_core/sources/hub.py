"""The Hugging Face Hub, behind one door: offline detection, a quick reachability probe, cached
and resumable downloads, and errors that say what to do. Nothing else in the library talks to
the network.

Files already in the local Hugging Face cache are used without asking the Hub again, so a pool
that was downloaded once works offline. Downloads resume after an interruption
(``huggingface_hub`` keeps ``.incomplete`` files).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0      # how long availability checks may wait for the Hub
_PROBE_TTL_S = 60.0        # a probe result is reused this long
_probe_cache: dict[str, tuple[float, str | None]] = {}
_TRUE = ("1", "true", "yes", "on")


class HubUnavailable(FileNotFoundError):
    """A file is neither in the local cache nor downloadable right now."""


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read now, not at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    from huggingface_hub import is_offline_mode

    return bool(is_offline_mode())


def cache_dir() -> str:
    """The Hugging Face cache folder (``$HF_HUB_CACHE``, read now, or the library default)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or constants.HF_HUB_CACHE


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def _head(url: str, timeout: float, out: list) -> None:
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout):
            out.append(None)
    except urllib.error.HTTPError as e:    # something answered, but not the Hub's home page
        out.append(f"HTTP {e.code} from {url}")
    except Exception as e:         # DNS failure, refused, timed out, TLS error...
        out.append(f"{type(e).__name__}: {e}")


def probe(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if the Hub answers within ``timeout`` seconds, else why not. Never blocks longer
    (DNS look-ups run in a daemon thread); results are cached for a minute."""
    if offline():
        return "HF_HUB_OFFLINE is set"
    url = endpoint()
    hit = _probe_cache.get(url)
    if hit and time.monotonic() - hit[0] < _PROBE_TTL_S:
        return hit[1]
    out: list = []
    t = threading.Thread(target=_head, args=(url, timeout, out), daemon=True)
    t.start()
    t.join(timeout + 0.2)
    reason = out[0] if out else f"no answer from {url} within {timeout:.0f} s"
    if reason:
        reason = f"the Hugging Face Hub is not reachable ({reason})"
    _probe_cache[url] = (time.monotonic(), reason)
    return reason


def cached_file(repo: str, filename: str, repo_type: str = "model") -> str | None:
    """Path of ``filename`` of ``repo`` in the local cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, filename, cache_dir=cache_dir(), repo_type=repo_type)
    return hit if isinstance(hit, str) else None


def _unavailable(what: str, reason: str) -> HubUnavailable:
    return HubUnavailable(
        f"{what} is not in the local Hugging Face cache ({cache_dir()}) and cannot be downloaded: {reason}. "
        "Run once with network access (and HF_HUB_OFFLINE unset) to cache it, or use the Tiny-8 pool "
        "or checkpoints in a local folder.")


def download(repo: str, filename: str, repo_type: str = "model") -> str:
    """Local path of ``repo``/``filename``: from the cache, else downloaded (resumable)."""
    hit = cached_file(repo, filename, repo_type)
    if hit:
        return hit
    reason = probe()
    if reason:
        raise _unavailable(f"{repo}/{filename}", reason)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    log.info("downloading %s/%s from the Hugging Face Hub", repo, filename)
    try:
        return hf_hub_download(repo, filename, repo_type=repo_type, cache_dir=cache_dir(), etag_timeout=PROBE_TIMEOUT_S * 5)
    except RepositoryNotFoundError:
        raise HubUnavailable(f"the Hub has no {repo_type} repository {repo!r} (or it is private); check the id") from None
    except EntryNotFoundError:
        raise HubUnavailable(f"the Hub repository {repo!r} has no file {filename!r}") from None
    except Exception as e:   # network errors of any flavour (requests/httpx/OS)
        raise _unavailable(f"{repo}/{filename}", f"{type(e).__name__}: {e}") from None


def download_first(repo: str, filenames: Sequence[str], repo_type: str = "model") -> str:
    """The first of ``filenames`` that the repository has (cached ones first)."""
    for name in filenames:
        hit = cached_file(repo, name, repo_type)
        if hit:
            return hit
    last: Exception | None = None
    for name in filenames:
        try:
            return download(repo, name, repo_type)
        except HubUnavailable as e:
            last = e
            if "has no file" not in str(e):
                raise
    raise HubUnavailable(f"the Hub repository {repo!r} has none of {list(filenames)}") from last


def _cached_snapshot(repo: str, repo_type: str, patterns: Sequence[str], revision: str | None = None) -> list[Path]:
    from huggingface_hub import snapshot_download

    try:
        root = snapshot_download(repo, repo_type=repo_type, cache_dir=cache_dir(), allow_patterns=list(patterns),
                                 local_files_only=True, revision=revision)
    except Exception:   # not cached (LocalEntryNotFoundError and relatives)
        return []
    return sorted({p for pat in patterns for p in Path(root).glob(pat) if p.is_file()})


def snapshot_files(repo: str, patterns: Sequence[str], repo_type: str = "dataset",
                   revision: str | None = None) -> list[Path]:
    """Local paths of the files of ``repo`` (at ``revision``, e.g. the Hub's parquet conversion
    ``refs/convert/parquet``; default the main branch) matching any of ``patterns`` (glob),
    downloading them if none is cached. An empty match is an error naming the patterns."""
    files = _cached_snapshot(repo, repo_type, patterns, revision)
    if files:
        return files
    reason = probe()
    if reason:
        raise _unavailable(f"{repo_type} {repo!r} ({', '.join(patterns)})", reason)
    from huggingface_hub import snapshot_download

    log.info("downloading %s %s (%s) from the Hugging Face Hub", repo_type, repo, ", ".join(patterns))
    try:
        root = snapshot_download(repo, repo_type=repo_type, cache_dir=cache_dir(), allow_patterns=list(patterns),
                                 etag_timeout=PROBE_TIMEOUT_S * 5, revision=revision)
    except Exception as e:
        raise _unavailable(f"{repo_type} {repo!r}", f"{type(e).__name__}: {e}") from None
    files = sorted({p for pat in patterns for p in Path(root).glob(pat) if p.is_file()})
    if not files:
        raise HubUnavailable(f"the Hub {repo_type} {repo!r} has no files matching {list(patterns)}")
    return files


def is_cached(repo: str, patterns: Sequence[str], repo_type: str = "dataset", revision: str | None = None) -> bool:
    return bool(_cached_snapshot(repo, repo_type, patterns, revision))

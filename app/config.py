"""Configuration from environment variables (documented in the README's "App" section).

Gradio itself honours GRADIO_SERVER_NAME and GRADIO_SERVER_PORT; everything here is ours.
Values are read when asked for, so tests can set variables before building the app.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)


def _int(name: str, default: int, low: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return max(low, int(float(raw)))
    except ValueError:
        log.warning("%s=%r is not a number; using %d", name, raw, default)
        return default


@dataclass(frozen=True)
class Limits:
    max_steps: int            # WEMOE_MAX_STEPS: adaptation steps per job
    max_jobs: int             # WEMOE_MAX_JOBS: jobs running at once on this server
    max_jobs_per_session: int  # WEMOE_MAX_JOBS_PER_SESSION: running or queued jobs per visitor
    max_models: int           # WEMOE_MAX_MODELS: models kept per session (oldest dropped)
    max_sessions: int         # WEMOE_MAX_SESSIONS: sessions kept (least recently seen dropped)
    session_ttl_s: int        # WEMOE_SESSION_TTL_S: idle seconds before a session is dropped
    max_upload_mb: int        # WEMOE_MAX_UPLOAD_MB: largest upload
    max_image_pixels: int     # WEMOE_MAX_IMAGE_PIXELS: largest decoded image (width x height)
    job_timeout_s: int        # WEMOE_JOB_TIMEOUT_S: a job stops (keeping what it learned) after this
    queue_size: int           # WEMOE_QUEUE_SIZE: requests waiting in gradio's queue
    eval_limit: int           # WEMOE_EVAL_LIMIT: test images per task for accuracy (0 = all)
    files_ttl_s: int          # WEMOE_FILES_TTL_S: uploaded and exported files are deleted after this


def limits() -> Limits:
    return Limits(
        max_steps=_int("WEMOE_MAX_STEPS", 2000, 1),
        max_jobs=_int("WEMOE_MAX_JOBS", 2, 1),
        max_jobs_per_session=_int("WEMOE_MAX_JOBS_PER_SESSION", 1, 1),
        max_models=_int("WEMOE_MAX_MODELS", 12, 1),
        max_sessions=_int("WEMOE_MAX_SESSIONS", 200, 1),
        session_ttl_s=_int("WEMOE_SESSION_TTL_S", 6 * 3600, 60),
        max_upload_mb=_int("WEMOE_MAX_UPLOAD_MB", 10, 1),
        max_image_pixels=_int("WEMOE_MAX_IMAGE_PIXELS", 40_000_000, 1),
        job_timeout_s=_int("WEMOE_JOB_TIMEOUT_S", 1800, 1),
        queue_size=_int("WEMOE_QUEUE_SIZE", 64, 1),
        eval_limit=_int("WEMOE_EVAL_LIMIT", 0, 0),
        files_ttl_s=_int("WEMOE_FILES_TTL_S", 6 * 3600, 1),
    )


def default_pool() -> str:
    """WEMOE_POOL: the pool the page opens with (default ``tiny8``). WEMOE_POOL_DIR (read by
    wemoe_core) adds a folder of pool files; WEMOE_TINY8_DIR points at another Tiny-8 build."""
    return os.environ.get("WEMOE_POOL", "").strip() or "tiny8"


@functools.lru_cache(maxsize=1)
def device() -> str:
    """WEMOE_DEVICE (``cpu``, ``cuda``, ``cuda:1``...), else ``cuda`` when available. The first
    call imports torch and applies WEMOE_THREADS: the page itself is built without torch."""
    import torch

    set_threads()
    wanted = os.environ.get("WEMOE_DEVICE", "").strip()
    if wanted:
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            log.warning("WEMOE_DEVICE=%s but CUDA is not available; using the CPU", wanted)
            return "cpu"
        return wanted
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads() -> None:
    """WEMOE_THREADS: torch CPU threads (default: torch's choice). On a busy shared CPU, 1 is
    often faster than 2: threads that wait for each other waste their time slices."""
    n = _int("WEMOE_THREADS", 0, 0)
    if n:
        import torch

        torch.set_num_threads(n)


_WARM = threading.Lock()      # taken once, never released: one warm-up per process


def warm_up() -> None:
    """Import torch and open_clip (seconds) in the background once a first page has loaded, so
    the page itself appears without waiting for them and the first model built later does not
    either (a request that needs them meanwhile waits for the same import, never a second one)."""
    if not _WARM.acquire(blocking=False):
        return

    def work() -> None:
        device()
        import open_clip  # noqa: F401

    threading.Thread(target=work, name="warm-up", daemon=True).start()


def device_label() -> str:
    """What the page says about where the work runs."""
    import torch

    dev = device()
    if dev.startswith("cuda"):
        return f"GPU ({torch.cuda.get_device_name(torch.device(dev))})"
    return f"CPU ({torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)})"

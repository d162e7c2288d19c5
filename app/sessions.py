"""The server-side store of visitors' sessions: their pool and tasks, models, jobs and last image.

A browser keeps only a random, unguessable id (``gr.BrowserState``); everything else stays here,
so a reload finds the session (and a running job) again, and no id can reach another's data.
API clients (``gradio_client``) get a session per client connection (``api-<session_hash>``).
"""
from __future__ import annotations

import atexit
import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .config import default_pool, limits

log = logging.getLogger(__name__)
_ID = re.compile(r"^(s-[A-Za-z0-9_-]{32}|api-[A-Za-z0-9_-]{1,64})$")


_EXPORTS: dict[str, Path] = {}


def export_root() -> Path:
    """This process's folder of export files (one sub-folder per export), removed at exit;
    a session's folder goes when the session is dropped or exports again."""
    if "root" not in _EXPORTS:
        _EXPORTS["root"] = Path(tempfile.mkdtemp(prefix="wemoe-exports-"))
        atexit.register(shutil.rmtree, _EXPORTS["root"], True)
    return _EXPORTS["root"]


@dataclass(eq=False)
class ModelEntry:
    """One finished method run of a session."""

    id: str                              # "m3": stable within the session
    label: str                           # "WEMoE #3": what the page shows
    method: str                          # registry name
    pretty: str                          # "WEMoE"
    pool: str
    tasks: list[str]
    variant: str                         # "paper", "tiny8 recipe" or "custom"
    run: Any                             # wemoe_core.running.workbench.Run
    seconds: float                       # build + adaptation wall time
    steps_done: int = 0
    stopped: bool = False
    routing_share: pd.DataFrame | None = None
    error: str = ""                      # why adaptation ended early (the model is its last good state)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_wemoe(self) -> bool:
        return self.method == "wemoe"


@dataclass(eq=False)
class Session:
    id: str
    pool: str = field(default_factory=default_pool)
    tasks: list[str] = field(default_factory=list)
    models: "OrderedDict[str, ModelEntry]" = field(default_factory=OrderedDict)
    job_id: str | None = None            # the latest job (running or finished)
    counter: int = 0
    image: Any = None                    # the last image explored (PIL)
    image_note: str = ""                 # where it came from ("example: signs, stop")
    truth: tuple[str, str] | None = None  # (task, class) of an example image
    explanations: dict = field(default_factory=dict)   # model id -> last Explanation (overlay redraws)
    export_dir: Any = None               # the folder of the last export (replaced by the next)
    last_seen: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def add_model(self, entry_factory) -> ModelEntry:
        """Add a model made by ``entry_factory(id, number)``; drops the oldest beyond the limit."""
        with self.lock:
            self.counter += 1
            entry = entry_factory(f"m{self.counter}", self.counter)
            self.models[entry.id] = entry
            while len(self.models) > limits().max_models:
                old, _ = self.models.popitem(last=False)
                self.explanations.pop(old, None)
                log.info("session %s: dropped model %s (limit)", self.id[:8], old)
            return entry

    def model(self, key: str | None) -> ModelEntry | None:
        """A model by id, label or method name (the latest of that method); None: the latest."""
        with self.lock:
            if not self.models:
                return None
            if not key:
                return next(reversed(self.models.values()))
            if key in self.models:
                return self.models[key]
            for m in reversed(self.models.values()):
                if key in (m.label, m.method):
                    return m
            return None

    def wemoe_models(self) -> list[ModelEntry]:
        with self.lock:
            return [m for m in self.models.values() if m.is_wemoe]

    def drop(self) -> None:
        """Forget everything (the session was evicted): models, image, export files."""
        with self.lock:
            folder, self.export_dir = self.export_dir, None
            self.models.clear()
            self.explanations.clear()
            self.image = None
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


class SessionStore:
    """Sessions by id, with a cap on their number and an idle time-out."""

    def __init__(self):
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return "s-" + secrets.token_urlsafe(24)

    def resume(self, sid: str | None) -> Session:
        """The session of a browser id; a new session (and id) if the id is unknown or malformed."""
        with self._lock:
            s = self._sessions.get(sid) if isinstance(sid, str) and _ID.match(sid) else None
            if s is None:
                s = Session(self.new_id())
                self._sessions[s.id] = s
                self._evict()
            s.last_seen = time.monotonic()
            return s

    def for_api(self, session_hash: str | None) -> Session:
        """The session of a gradio_client connection (one per client)."""
        key = "api-" + re.sub(r"[^A-Za-z0-9_-]", "", session_hash or "")[:64]
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                s = self._sessions[key] = Session(key)
                self._evict()
            s.last_seen = time.monotonic()
            return s

    def get(self, sid: str | None) -> Session | None:
        with self._lock:
            s = self._sessions.get(sid) if sid else None
            if s is not None:
                s.last_seen = time.monotonic()
            return s

    def __len__(self) -> int:
        return len(self._sessions)

    def _evict(self) -> None:
        """Drop idle sessions, then the least recently seen beyond the cap (never one whose
        job is running: the job keeps its own reference and finishes anyway)."""
        lim, now = limits(), time.monotonic()
        from .jobs import JOBS

        busy = JOBS.busy_sessions()
        for sid, s in list(self._sessions.items()):
            if now - s.last_seen > lim.session_ttl_s and sid not in busy:
                self._sessions.pop(sid).drop()
        idle = sorted((s.last_seen, sid) for sid, s in self._sessions.items() if sid not in busy)
        for _, sid in idle[: max(0, len(self._sessions) - lim.max_sessions)]:
            self._sessions.pop(sid).drop()


STORE = SessionStore()

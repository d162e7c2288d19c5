"""Background jobs: one thread per job, progress snapshots the page polls, a stop flag checked
between steps, and limits (jobs at once on the server, jobs per session, a time-out).

A job's work is a function ``work(job) -> result`` (see ``runs.py``); it reports progress with
``job.record(step_info)`` and asks ``job.should_stop()`` between steps. Stopping keeps what
was learned so far: the work function finishes normally with fewer steps.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .config import limits
from .messages import for_visitor, reference

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
FINISHED = (DONE, STOPPED, FAILED)


def gpu(fn: Callable) -> Callable:
    """``spaces.GPU`` on Hugging Face ZeroGPU Spaces (where the ``spaces`` package exists);
    the function itself everywhere else."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(duration=limits().job_timeout_s)(fn)


class JobRefused(RuntimeError):
    """A limit says no; the message says what to do."""


@dataclass
class Progress:
    """What the page draws while a job runs (copied out under the job's lock)."""

    state: str = QUEUED
    message: str = ""
    step: int = 0
    steps: int = 0
    elapsed: float = 0.0
    curve_steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    entropy: dict[str, list[float]] = field(default_factory=dict)     # task -> per step (nats)
    own: dict[str, list[float]] = field(default_factory=dict)         # task -> own expert's weight
    routing_now: np.ndarray | None = None     # (tasks, experts), mean over layers; or coefficients
    routing_kind: str = ""                    # "routing", "coefficients" or ""
    version: int = 0


class Job:
    def __init__(self, session_id: str, label: str, tasks: list[str], steps: int, work: Callable[["Job"], Any]):
        self.id = "j-" + secrets.token_urlsafe(12)
        self.session_id, self.label, self.tasks, self.work = session_id, label, list(tasks), work
        self.progress = Progress(steps=steps, message="waiting for a free slot")
        self.result: Any = None
        self.error = ""
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.done = threading.Event()

    # --- called from the work thread ---------------------------------------------------------
    def record(self, info) -> None:
        """Store one adaptation step (a wemoe_core StepInfo)."""
        with self._lock:
            p = self.progress
            p.step, p.steps, p.elapsed = info.step, info.steps, info.elapsed
            p.curve_steps.append(info.step)
            p.loss.append(info.loss)
            for t, h in info.entropy.items():
                p.entropy.setdefault(t, []).append(h)
            if info.routing is not None:                        # (tasks, layers, experts)
                mean = np.asarray(info.routing).mean(axis=1)
                p.routing_now, p.routing_kind = mean, "routing"
                for i, t in enumerate(self.tasks):
                    p.own.setdefault(t, []).append(float(mean[i, i]))
            elif info.coefficients is not None:                 # (T,) or (groups, T)
                c = np.asarray(info.coefficients)
                p.routing_now, p.routing_kind = (c[None] if c.ndim == 1 else c), "coefficients"
                per_task = c if c.ndim == 1 else c.mean(axis=0)
                for i, t in enumerate(self.tasks):
                    p.own.setdefault(t, []).append(float(per_task[i]))
            p.version += 1

    def set_state(self, state: str, message: str = "") -> None:
        with self._lock:
            self.progress.state, self.progress.message = state, message
            self.progress.version += 1

    def should_stop(self) -> bool:
        return self._stop.is_set() or time.monotonic() - self.started > limits().job_timeout_s

    # --- called from the page ----------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> Progress:
        with self._lock:
            p = self.progress
            return Progress(p.state, p.message, p.step, p.steps, p.elapsed, list(p.curve_steps), list(p.loss),
                            {t: list(v) for t, v in p.entropy.items()}, {t: list(v) for t, v in p.own.items()},
                            None if p.routing_now is None else p.routing_now.copy(), p.routing_kind, p.version)

    @property
    def finished(self) -> bool:
        return self.progress.state in FINISHED


class JobManager:
    """Runs jobs in threads, at most ``WEMOE_MAX_JOBS`` at once (the others wait in line)."""

    def __init__(self):
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._slots: threading.Semaphore | None = None

    def _semaphore(self) -> threading.Semaphore:
        with self._lock:
            if self._slots is None:
                self._slots = threading.BoundedSemaphore(limits().max_jobs)
            return self._slots

    def submit(self, session_id: str, label: str, tasks: list[str], steps: int, work: Callable[[Job], Any]) -> Job:
        lim = limits()
        with self._lock:
            active = [j for j in self._jobs.values() if j.session_id == session_id and not j.finished]
            if len(active) >= lim.max_jobs_per_session:
                raise JobRefused(f"{active[0].label} is still running: stop it or wait for it to finish "
                                 f"(at most {lim.max_jobs_per_session} job{'s' * (lim.max_jobs_per_session > 1)} "
                                 "per visitor)")
            for old in self._jobs.values():     # the session holds its models; old jobs need not
                if old.session_id == session_id and old.finished:
                    old.result = None
            job = Job(session_id, label, tasks, steps, work)
            self._jobs[job.id] = job
            self._forget_old()
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.id}", daemon=True).start()
        return job

    def get(self, session_id: str, job_id: str | None) -> Job | None:
        """A job, only for the session that started it."""
        with self._lock:
            job = self._jobs.get(job_id) if job_id else None
        return job if job is not None and job.session_id == session_id else None

    def busy_sessions(self) -> set[str]:
        with self._lock:
            return {j.session_id for j in self._jobs.values() if not j.finished}

    def running(self) -> int:
        with self._lock:
            return sum(j.progress.state == RUNNING for j in self._jobs.values())

    def _run(self, job: Job) -> None:
        slots = self._semaphore()
        if not slots.acquire(blocking=False):
            job.set_state(QUEUED, f"waiting: {self.running()} job(s) are using this server")
            while not slots.acquire(timeout=0.5):
                if job.stop_requested:
                    job.work = None
                    job.set_state(STOPPED, "stopped before it started")
                    job.done.set()
                    return
        try:
            job.started = time.monotonic()
            job.set_state(RUNNING, "starting")
            log.info("job %s (%s) started: %d task(s), %d step(s)", job.id, job.label, len(job.tasks), job.progress.steps)
            job.result = gpu(job.work)(job)
            error = getattr(job.result, "error", "")
            if error:      # adaptation failed; the work kept the model of the last good step
                job.error = error
                kept = getattr(job.result, "label", job.label)
                job.set_state(FAILED, f"{job.label} failed: {error} The last good state "
                                      f"({job.progress.step} steps) is kept as {kept}.")
            else:
                stopped = bool(getattr(job.result, "stopped", False))
                job.set_state(STOPPED if stopped else DONE, _end_message(job, stopped))
        except Exception as e:  # noqa: BLE001 - any failure becomes a message on the page
            ref = reference()
            log.exception("job %s failed [ref %s]", job.id, ref)
            job.error = _failure_text(e, ref)
            job.set_state(FAILED, f"{job.label} failed: {job.error}")
        finally:
            job.work = None                     # let go of the session, pool and model it captured
            log.info("job %s (%s) ended: %s", job.id, job.label, job.progress.message)
            slots.release()
            job.done.set()

    def _forget_old(self, keep: int = 500) -> None:
        finished = [j for j in self._jobs.values() if j.finished]
        for j in finished[: max(0, len(finished) - keep)]:
            del self._jobs[j.id]


def _failure_text(e: Exception, ref: str) -> str:
    """What the page says about a job that failed outright (nothing to keep): our own refusals
    (a ValueError, a file that cannot be read) in a visitor's words, anything else as a failure
    the server logged under ``ref``."""
    from wemoe_core.running.adapt import is_out_of_memory

    if is_out_of_memory(e):
        from .runs import free_memory

        free_memory()
        return "ran out of memory: choose fewer tasks, a smaller batch size, or try again when the server is less busy"
    if isinstance(e, (ValueError, OSError)) and str(e):
        return for_visitor(str(e))
    return f"something went wrong on the server; it logged the details (reference {ref})"


def _end_message(job: Job, stopped: bool) -> str:
    p = job.progress
    took = f"{time.monotonic() - job.started:.1f} s"
    if not stopped:
        return f"{job.label} finished in {took}"
    why = "stopped" if job.stop_requested else f"reached the time limit ({limits().job_timeout_s} s)"
    return f"{job.label} {why} after {p.step} of {p.steps} steps ({took}); it keeps what it learned so far"


JOBS = JobManager()

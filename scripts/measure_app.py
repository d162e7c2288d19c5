"""Measure the app's targets on this machine with Tiny-8 and print one JSON line:

- start-up: ``python app.py`` until the page answers (HTTP 200) and until chromium shows the
  tabs; once **cold** (the repository's ``__pycache__`` folders removed first, as after a fresh
  clone: this run compiles and writes them) and ``--runs`` times **warm** (they are there); with
  the CPU time the app had used by its first answer (on a shared, busy CPU the wall time
  measures everyone's load, the CPU time only ours);
- predict: server time of Explore's predict (TA + WEMoE side by side, heatmap and overlay drawn),
  and the round trip of ``/predict`` through gradio_client;
- a WEMoE adaptation of N steps (the pool's recipe): wall time and progress updates per second.

The app runs as the README's command runs it: the caller's environment as it is (set
``HF_HUB_OFFLINE=1`` or ``GRADIO_ANALYTICS_ENABLED=False`` yourself to measure with them),
except that Python may write its byte-code caches (``PYTHONDONTWRITEBYTECODE`` is dropped).

    .venv/bin/python scripts/measure_app.py --steps 200 --runs 5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CODE = ("app", "wemoe_core")          # what `python app.py` imports from the repository


def drop_bytecode() -> int:
    """Remove the repository's byte-code caches, as a fresh clone has none; returns how many."""
    found = [d for top in CODE for d in (ROOT / top).rglob("__pycache__")]
    for d in found:
        shutil.rmtree(d, ignore_errors=True)
    return len(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far: on a shared CPU the wall time grows
    with everyone else's load, this does not (it is what the wall time would be on an idle
    machine, less the time spent waiting for the disk)."""
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return round(t.user + t.system, 2)
    except Exception:  # noqa: BLE001 - psutil missing or the process gone: not measured
        return None


def start_once(port: int, page) -> dict:
    """One ``python app.py``: seconds to the first HTTP 200, then to the tabs in chromium (on a
    port of its own each time, so no lingering server of an earlier run can answer)."""
    from benchmarks.load import wait_ready

    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["GRADIO_SERVER_PORT"] = str(port)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out = {}
    try:
        out["http_200_s"] = round(wait_ready(f"http://127.0.0.1:{port}/", proc), 2)
        out["http_200_cpu_s"] = cpu_seconds(proc.pid)
        if page is not None:
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("tab", name="2 · Merge & adapt").wait_for()
            out["tabs_visible_s"] = round(time.perf_counter() - t0, 2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def startup(port: int, runs: int = 3) -> dict:
    """Chromium is started first (a visitor's browser is already open); the clock starts at
    ``python app.py``. One cold start, then ``runs`` warm ones (medians, and every run)."""
    out: dict = {"env": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED")}}
    with contextlib.ExitStack() as stack:
        page = None
        try:
            from playwright.sync_api import sync_playwright

            p = stack.enter_context(sync_playwright())
            b = p.chromium.launch(executable_path="/usr/bin/chromium",
                                  args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            stack.callback(b.close)
            page = b.new_page()
        except Exception as e:  # noqa: BLE001 - no browser: report the HTTP time only
            out["browser"] = str(e)[:200]
        out["pycache_folders_removed"] = drop_bytecode()
        out["cold"] = start_once(port, page)
        warm = [start_once(port, page) for _ in range(runs)]
        for key in warm[0]:
            values = [w[key] for w in warm]
            out[f"warm_{key}_runs"] = values
            out[key] = round(statistics.median(values), 2)          # warm medians, as before
    return out


def predict_latency(n: int = 20) -> dict:
    import gradio as gr

    from app import callbacks, explore
    from app.sessions import STORE
    from tests.app.test_callbacks import run_to_end, values_for
    from wemoe_core.pools import load_pool

    pool = load_pool("tiny8")
    sid = STORE.resume(None).id
    for method, extra in (("task_arithmetic", {}), ("wemoe", {"steps": 2})):
        callbacks.start(sid, "tiny8", pool.tasks, method, *values_for(pool, method, **extra))
        run_to_end(sid, timeout=600)
    times = []
    for i in range(n):
        explore.use_example(sid, gr.SelectData(None, {"index": i % 16, "value": None}))
        t = time.perf_counter()
        explore.predict(sid, ["m1", "m2"], "m2", None, None)
        times.append(1000 * (time.perf_counter() - t))
    return {"predict_ms_median": round(statistics.median(times), 1), "predict_ms_max": round(max(times), 1),
            "models_side_by_side": 2}


def adaptation(steps: int) -> dict:
    from app import callbacks
    from app.jobs import JOBS
    from app.sessions import STORE
    from tests.app.test_callbacks import values_for
    from wemoe_core.pools import load_pool

    pool = load_pool("tiny8")
    sid = STORE.resume(None).id
    t0 = time.perf_counter()
    callbacks.start(sid, "tiny8", pool.tasks, "wemoe", *values_for(pool, "wemoe", steps=steps))
    s = STORE.get(sid)
    job = JOBS.get(s.id, s.job_id)
    seen, gaps, last = -1, [], None
    while not job.done.wait(0.5):                                  # what the page's timer sees
        p = job.snapshot()
        if p.step and p.step != seen:
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            seen, last = p.step, now
    p = job.snapshot()
    wall = time.perf_counter() - t0
    return {"wemoe_steps": p.step, "wemoe_adapt_s": round(p.elapsed, 1), "wemoe_total_s": round(wall, 1),
            "steps_per_s": round(p.step / p.elapsed, 2) if p.elapsed else None,
            "longest_gap_between_updates_s": round(max(gaps), 2) if gaps else None,
            "accuracy_avg": round(float(s.model(None).run.table.at["avg", "accuracy"]), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--port", type=int, default=0, help="the app's port (default: a free one per start)")
    ap.add_argument("--runs", type=int, default=3, help="warm start-ups after the cold one")
    ap.add_argument("--skip", default="", help="comma-separated: startup,predict,adapt")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    out = {"load_avg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    if "startup" not in skip:
        out |= startup(args.port, args.runs)
    from app.config import set_threads

    set_threads()
    if "predict" not in skip:
        out |= predict_latency()
    if "adapt" not in skip:
        out |= adaptation(args.steps)
    out["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out), flush=True)
    # Interpreter shutdown after this script aborts ("terminate called without an active
    # exception"; not traced, most likely the app's daemon threads still inside torch): the
    # measurement is printed, so leave without the teardown.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

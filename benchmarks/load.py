"""A bounded load test of the app on loopback: N concurrent gradio_client visitors call /predict
for a fixed time on Tiny-8 while one WEMoE adaptation runs.

    .venv/bin/python -m benchmarks.load --clients 20 --seconds 60 --json /tmp/load.json

It launches ``python app.py`` on a free loopback port (offline, ``HF_HUB_OFFLINE=1``) on the
Tiny-8 zoo (``--zoo``, else ``$WEMOE_TINY8_DIR``, else ``assets/tiny8``, else a seconds-long
mini build in a temporary folder, with the same architecture), warms it up, starts one WEMoE
adaptation from a visitor of its own, then runs the visitors. Each visitor is its own
``Client`` (its own session) that uploads a small PNG of its own and asks ``/predict`` again
as soon as the answer comes. Reported: requests served, errors (with the first messages),
latency percentiles, the server's resident memory before the visitors (adaptation running),
its peak and after them, adaptation steps done meanwhile, and whether the server still
answers. Exit status 1 when any request failed or the memory grew beyond ``--max-growth-mb``.

The visitors run as threads of this process, on the same machine as the server: on a small
machine they take CPU from it, so the latencies are an upper bound.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _say(msg: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def find_zoo(given: str | None, scratch: Path) -> tuple[Path, str]:
    """The Tiny-8 zoo to serve, and what it is."""
    for label, path in (("--zoo", given), ("$WEMOE_TINY8_DIR", os.environ.get("WEMOE_TINY8_DIR")),
                        ("assets/tiny8", str(ROOT / "assets" / "tiny8"))):
        if path and (Path(path) / "manifest.json").is_file():
            return Path(path), f"{label} ({path})"
    import dataclasses

    from wemoe_core.pools.tiny8.build import QUICK, build

    out = scratch / "tiny8-mini"
    _say(f"no Tiny-8 zoo found: building a mini one (same architecture, near-chance accuracy) in {out}")
    cfg = dataclasses.replace(QUICK, pretrain_steps=2, pretrain_batch=16, train_per_task=32, test_per_task=64,
                              probe_steps=2, finetune_steps=2, finetune_batch=16, threads=1, workers=1)
    build(out, cfg, report=lambda m: None)
    return out, "mini build (accuracy meaningless; model sizes as Tiny-8)"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(zoo: Path, port: int, log: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "WEMOE_TINY8_DIR": str(zoo),
           "WEMOE_MAX_STEPS": "100000", "PYTHONUNBUFFERED": "1"}
    if threads:
        env["WEMOE_THREADS"] = str(threads)
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> float:
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the app did not answer at {url} within {timeout:.0f} s")


class Memory(threading.Thread):
    """Samples the server's resident memory (MB) every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.every, self.samples, self._stop = psutil.Process(pid), every, [], threading.Event()

    def now(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.samples.append((time.monotonic(), self.now()))
            except Exception:  # noqa: BLE001 - the process is gone: the report says so
                return

    def stop(self) -> None:
        self._stop.set()


def make_images(folder: Path, n: int) -> list[str]:
    """One small PNG per visitor (different pixels, so every upload is a new file)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"visitor-{i}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def visitor(url: str, image: str, until: float, out: dict, lock: threading.Lock) -> None:
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False)
    except Exception as e:  # noqa: BLE001 - counted as an error
        with lock:
            out["errors"].append(f"connect: {type(e).__name__}: {str(e)[:200]}")
        return
    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            res = client.predict(handle_file(image), api_name="/predict")
            ok = isinstance(res, dict) and len(res.get("predictions", {})) == 8
        except Exception as e:  # noqa: BLE001 - counted as an error
            with lock:
                out["errors"].append(f"{type(e).__name__}: {str(e)[:200]}")
            continue
        dt = time.perf_counter() - t0
        with lock:
            (out["latency"] if ok else out["errors"]).append(dt if ok else f"malformed answer: {str(res)[:200]}")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))] if s else float("nan")


def run(args) -> dict:
    from gradio_client import Client, handle_file

    scratch = Path(tempfile.mkdtemp(prefix="wemoe-load-"))
    zoo, zoo_label = find_zoo(args.zoo, scratch)
    port, log = free_port(), scratch / "app.log"
    url = f"http://127.0.0.1:{port}/"
    t_launch = time.perf_counter()
    proc = start_server(zoo, port, log, args.threads)
    report: dict = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "clients": args.clients,
                    "seconds": args.seconds, "zoo": zoo_label, "machine": {
                        "cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
                    "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.load", *sys.argv[1:]])}
    try:
        report["startup_s"] = round(wait_ready(url, proc), 1)
        images = make_images(scratch, args.clients)
        mem = Memory(proc.pid)
        report["rss_mb_idle"] = round(mem.now(), 1)
        warm = Client(url, verbose=False)
        for _ in range(3):                          # builds the shared default model
            warm.predict(handle_file(images[0]), api_name="/predict")
        report["rss_mb_warm"] = round(mem.now(), 1)

        job, step0 = None, 0
        if args.steps:
            trainer = Client(url, verbose=False)
            job = trainer.submit("wemoe", {}, None, {"steps": args.steps}, api_name="/merge")
            end = time.monotonic() + 300
            while not any(o.get("status") == "running" and o.get("step", 0) >= 1 for o in job.outputs()):
                if job.done() or time.monotonic() > end:
                    raise RuntimeError(f"the adaptation did not start: {job.outputs()[-1:] or job.status()}")
                time.sleep(0.2)
            step0 = job.outputs()[-1]["step"]
        _say(f"adaptation {'running (step %d)' % step0 if job else 'off'}; {args.clients} visitors for {args.seconds} s")
        mem.start()
        before = mem.now()
        out, lock, rounds = {"latency": [], "errors": []}, threading.Lock(), []
        t0 = time.monotonic()
        for r in range(args.rounds):            # each round: new visitors (new sessions), same server
            r_start, r_before, n0 = time.monotonic(), mem.now(), len(out["latency"])
            until = r_start + args.seconds
            threads = [threading.Thread(target=visitor, args=(url, images[i], until, out, lock), daemon=True)
                       for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(args.seconds + 300)
            rounds.append({"requests": len(out["latency"]) - n0, "rss_mb_before": round(r_before, 1),
                           "rss_mb_after": round(mem.now(), 1), "rss_growth_mb": round(mem.now() - r_before, 1),
                           "p50_s": round(pct(out["latency"][n0:], 50), 3), "p95_s": round(pct(out["latency"][n0:], 95), 3)})
            _say(f"round {r + 1}/{args.rounds}: {rounds[-1]}")
        wall = time.monotonic() - t0
        after = mem.now()
        mem.stop()
        last = job.outputs()[-1] if job else {"status": "off", "step": 0}
        alive = proc.poll() is None
        report.update({
            "requests_served": len(out["latency"]), "errors": len(out["errors"]),
            "error_examples": sorted(set(out["errors"]))[:5],
            "throughput_rps": round(len(out["latency"]) / wall, 2),
            "latency_s": {"p50": round(pct(out["latency"], 50), 3), "p95": round(pct(out["latency"], 95), 3),
                          "p99": round(pct(out["latency"], 99), 3), "max": round(max(out["latency"], default=0), 3),
                          "mean": round(statistics.fmean(out["latency"]), 3) if out["latency"] else None},
            "rss_mb_before": round(before, 1), "rss_mb_peak": round(max([before, after, *(m for _, m in mem.samples)]), 1),
            "rss_mb_after": round(after, 1), "rss_growth_mb": round(after - before, 1), "rounds": rounds,
            "adaptation": {"status": last.get("status"), "steps_during_load": last.get("step", 0) - step0,
                           "steps_per_s": round((last.get("step", 0) - step0) / wall, 2)},
            "server_alive": alive,
        })
        if job:
            job.cancel()                            # the server stops a job whose client leaves
            end = time.monotonic() + 120
            while time.monotonic() < end and "stopped after" not in log.read_text():
                time.sleep(0.5)
            report["adaptation"]["stopped_cleanly"] = "stopped after" in log.read_text()
        check = Client(url, verbose=False).predict(handle_file(images[0]), api_name="/predict")
        report["server_answers_after"] = len(check.get("predictions", {})) == 8
        report["rss_mb_end"] = round(mem.now(), 1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        report["server_log_tail"] = log.read_text()[-1500:] if log.exists() else ""
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20, help="concurrent visitors (default 20)")
    p.add_argument("--seconds", type=float, default=60, help="how long they keep asking (default 60)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat with new visitors (new sessions) on the same server; growth per round shows a bound")
    p.add_argument("--steps", type=int, default=100_000, help="steps of the adaptation that runs meanwhile (0: none)")
    p.add_argument("--zoo", help="a Tiny-8 build (default: $WEMOE_TINY8_DIR, assets/tiny8, else a mini build)")
    p.add_argument("--threads", type=int, default=1, help="WEMOE_THREADS of the server (0: PyTorch's choice)")
    p.add_argument("--max-growth-mb", type=float, default=None, help="fail if RSS grows more than this")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.rounds < 1:
        p.error("--clients, --seconds and --rounds must be positive")
    report = run(args)
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    brief = {k: report.get(k) for k in ("clients", "seconds", "requests_served", "errors", "throughput_rps", "latency_s",
                                        "rss_mb_before", "rss_mb_peak", "rss_mb_after", "rss_growth_mb", "rounds", "adaptation",
                                        "server_alive", "server_answers_after")}
    print(json.dumps(brief, indent=1))
    bad = report.get("errors", 1) > 0 or not report.get("server_alive") or not report.get("server_answers_after")
    if args.max_growth_mb is not None and report.get("rss_growth_mb", 0) > args.max_growth_mb:
        _say(f"memory grew {report['rss_growth_mb']} MB, over the bound of {args.max_growth_mb} MB")
        bad = True
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""``torchrun --nproc_per_node 2 -m wemoe_core ...`` end to end on the shipped Tiny-8 zoo (2 CPU
ranks, one thread each, bounded in time): the same accuracies as one process, one JSON written
(by rank 0), routers from a sharded run that load into the one-process model, and the clear
failures of ranks that run different commands or find no rendezvous."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.dist_ranks import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not (ROOT / "assets" / "tiny8" / "manifest.json").is_file(),
                                 reason="needs the shipped Tiny-8 zoo (assets/tiny8)")]
SMALL = ["--pool", "tiny8", "--tasks", "scenes,digits", "--steps", "2", "--eval-limit", "20"]


def env(**extra) -> dict:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    e.pop("WEMOE_TINY8_DIR", None)
    return e


def torchrun(*args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), "-m", "wemoe_core", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def one_process(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wemoe_core", *args], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def test_torchrun_evaluate_gives_the_one_process_accuracies(tmp_path):
    args = ["evaluate", *SMALL, "--methods", "wemoe"]
    two = torchrun(*args, "--json", str(tmp_path / "two.json"))
    assert two.returncode == 0, two.stderr[-3000:]
    one = one_process(*args, "--json", str(tmp_path / "one.json"))
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert a["accuracy"] == b["accuracy"] and a["routing_share"] == b["routing_share"]
    assert b["ranks"] == {"world": 2, "mode": "data parallel"}
    assert two.stdout.count("wall time") == 1                      # rank 0 alone prints (and writes)


def test_sharded_merge_writes_routers_that_load_into_one_process(tmp_path):
    out = tmp_path / "routers.safetensors"
    run = torchrun("merge", *SMALL, "--method", "wemoe", "--shard-experts", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "routers only" in run.stdout and run.stdout.count("wrote") == 1
    from wemoe_core.pools import load_pool
    from wemoe_core.running.workbench import build_model
    from wemoe_core.sources.files import load_routers

    os.environ.pop("WEMOE_TINY8_DIR", None)
    load_pool.cache_clear()
    model = build_model(load_pool("tiny8"), ["scenes", "digits"], "wemoe").model
    assert load_routers(model.encoder, out).adapt["steps_done"] == 2     # the whole model's fingerprint


def test_ranks_started_with_different_commands_stop_with_a_clear_message():
    port = str(free_port())
    procs = []
    for rank, tasks in enumerate(["scenes,digits", "scenes,signs"]):
        e = env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                WEMOE_DIST_TIMEOUT_S="60")
        procs.append(subprocess.Popen([sys.executable, "-m", "wemoe_core", "evaluate", "--pool", "tiny8", "--methods",
                                       "task_arithmetic", "--tasks", tasks], cwd=ROOT, env=e, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 1, err[-2000:]
        assert ("the ranks disagree on the command, pool and code: rank 1 has command.tasks=\"scenes,signs\" where "
                "rank 0 has command.tasks=\"scenes,digits\"") in err


def test_a_missing_rendezvous_is_explained_by_the_command_line():
    e = env(WORLD_SIZE="2")
    for k in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        e.pop(k, None)
    run = subprocess.run([sys.executable, "-m", "wemoe_core", "evaluate", "--pool", "tiny8"], cwd=ROOT, env=e,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "error: no rendezvous: MASTER_ADDR, MASTER_PORT, RANK are not set; launch with `torchrun" in run.stderr

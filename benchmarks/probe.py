"""Peak memory of calls, in a fresh process: ``python -m benchmarks.probe SPEC_JSON``.

SPEC: {"setup": {...Setup fields}, "calls": [[kind, variant, size], ...], "threads": n}. Libraries are
initialised by two small unmeasured calls, then each call runs once, measured; the per-sample
workspace is released before each, so its allocation counts in the call that makes it.
Prints one JSON line: {"resident_after_build": bytes, "expert_bytes": bytes,
"peaks": [bytes per call]}. Started by ``harness.run_probe`` with the pinned mmap threshold."""
from __future__ import annotations

import json
import sys

import torch

from wemoe_core.merging.experts import release_workspace

from . import harness
from .scenarios import Bench, setup_from


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    torch.set_num_threads(int(spec.get("threads", torch.get_num_threads())))
    bench = Bench(setup_from(spec["setup"]))
    bench.call("infer", "wemoe", 1)()              # initialise the libraries once, unmeasured
    bench.call("tta", "plain", 1)()
    resident = harness.resident()
    peaks = []
    for kind, variant, size in spec["calls"]:
        release_workspace()                        # so a call's workspace counts in its own peak
        peaks.append(harness.peak_of(bench.call(kind, variant, size)))
    print(json.dumps({"resident_after_build": resident, "expert_bytes": bench.expert_bytes(), "peaks": peaks}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

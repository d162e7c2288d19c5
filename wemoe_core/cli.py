"""The command line. Each sub-command is a thin layer over the public API."""
from __future__ import annotations

import argparse
import logging
import sys

import torch

log = logging.getLogger("wemoe_core")


def _demo(args) -> int:
    """Merge three tiny random towers with every method and adapt WEMoE for a few steps."""
    import wemoe_core as wc
    from wemoe_core.models import Heads, VisionConfig, build_vision

    torch.manual_seed(0)
    cfg = VisionConfig(image_size=16, patch_size=4, width=32, layers=2, heads=4, output_dim=16)
    pre = build_vision(cfg).eval()
    fts = []
    for t in range(3):
        ft = build_vision(cfg).eval()
        ft.load_state_dict({k: v + 0.02 * torch.randn_like(v) for k, v in pre.state_dict().items()})
        fts.append(ft)
    tasks = ["a", "b", "c"]
    heads = Heads({t: torch.randn(4, 16) for t in tasks})
    model = wc.MultiTaskModel(wc.build("wemoe", pre, fts, tasks), heads)
    data = {t: iter(lambda: torch.randn(8, 3, 16, 16), None) for t in tasks}
    res = wc.adapt(model, data, wc.AdaptParams(steps=args.steps, lr=1e-3),
                   callback=lambda s: print(f"step {s.step}/{s.steps} loss {s.loss:.4f}", file=sys.stderr))
    print(f"adapted {res.steps_done} steps; routing weights (layers, batch, experts): "
          f"{tuple(model.encoder.routing_weights().shape)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wemoe_core", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="a 10-second self-check on tiny random models")
    d.add_argument("--steps", type=int, default=5)
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

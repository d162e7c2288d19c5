import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import wemoe_core as wc
from wemoe_core.model.towers import state_of
from wemoe_core.sources import files as io
from tests.conftest import TINY, make_pool

TASKS = ["task0", "task1", "task2"]


def _recipe(**kw):
    return io.Recipe(method="wemoe", hparams={"init_lambda": 0.3}, pool="test", tasks=TASKS, seed=0, **kw)


def test_recipe_round_trips_through_json():
    r = _recipe(adapt={"steps": 10})
    assert io.Recipe.from_json(r.to_json()) == r


def test_merged_model_round_trips_bit_exactly(tmp_path, pool, images):
    pre, fts, _ = pool
    merged = wc.merge("ties", state_of(pre), [state_of(f) for f in fts])
    path = io.save_merged(tmp_path / "m.safetensors", merged, TINY, _recipe())
    model, recipe = io.load_merged(path)
    for k, v in state_of(model).items():
        assert torch.equal(v, merged[k]), k
    assert recipe.method == "wemoe" and recipe.tasks == TASKS


@pytest.mark.parametrize("kw", [{}, {"upscale_attention": True, "router_depth": 1},
                                {"compress": "lowrank", "rank": 4, "blocks": 2},
                                {"compress": "lowrank", "rank": 4, "factors": "bfloat16", "factor_math": "bfloat16"}])
def test_wemoe_round_trips_bit_exactly(tmp_path, pool, images, kw):
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, task_names=TASKS, **kw)
    with torch.no_grad():
        for p in model.router_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = io.save_wemoe(tmp_path / "w.safetensors", model, TINY, _recipe())
    loaded, _ = io.load_wemoe(path)
    assert loaded.params == model.params and loaded.task_names == TASKS
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert torch.equal(model(images), loaded(images))
    assert all(p.requires_grad == ("router" in n) for n, p in loaded.named_parameters())
    assert [getattr(m, "math", None) for m in loaded.modules()] == [getattr(m, "math", None) for m in model.modules()]


def test_router_checkpoint_reattaches_to_the_same_pool_only(tmp_path, pool, images):
    pre, fts, _ = pool
    trained = wc.upscale(pre, fts, task_names=TASKS)
    with torch.no_grad():
        for p in trained.router_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = io.save_routers(tmp_path / "r.safetensors", trained, _recipe())
    whole = io.save_wemoe(tmp_path / "w.safetensors", trained, TINY, _recipe())
    assert path.stat().st_size < whole.stat().st_size / 2    # routers only, not the experts
    fresh = wc.upscale(pre, fts, task_names=TASKS, seed=7)
    io.load_routers(fresh, path)
    assert torch.equal(fresh(images), trained(images))
    other_pre, other_fts, _ = make_pool(seed=9)
    with pytest.raises(ValueError, match="other model weights"):
        io.load_routers(wc.upscale(other_pre, other_fts, task_names=TASKS), path)
    with pytest.raises(ValueError, match="tasks"):
        io.load_routers(wc.upscale(pre, fts[:2], task_names=TASKS[:2]), path)
    with pytest.raises(ValueError, match="other settings"):
        io.load_routers(wc.upscale(pre, fts, task_names=TASKS, router_depth=1), path)


def test_wrong_and_corrupt_files_get_clear_errors(tmp_path, pool):
    pre, fts, _ = pool
    path = io.save_merged(tmp_path / "m.safetensors", state_of(pre), TINY, _recipe())
    with pytest.raises(ValueError, match="not wemoe-explorer/wemoe"):
        io.load_wemoe(path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        io.load_merged(junk)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError):
        io.load_merged(truncated)


def test_a_killed_writer_leaves_no_file_under_the_final_name(tmp_path):
    """Kill a process in the middle of a large export: the target name never holds a partial file."""
    target = tmp_path / "big.safetensors"
    code = textwrap.dedent(f"""
        import torch, sys
        from wemoe_core.sources.files import atomic_save
        print("ready", flush=True)
        atomic_save({{"x": torch.zeros(64, 1024, 1024)}}, {str(target)!r}, {{}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == b"ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()

"""The app's callbacks as plain functions (no server): validation messages, jobs, sessions."""
from __future__ import annotations

import time

import gradio as gr
import pytest

from app import callbacks, controls, runs
from app.jobs import DONE, JOBS, STOPPED, JobRefused
from app.sessions import STORE
from wemoe_core.merging.registry import METHODS


def values_for(pool, method: str, preset: str = "recipe", **changes) -> list:
    """Control values in LAYOUT order, as the page would send them."""
    v = controls.preset_values(pool, method, preset, 10_000)
    out = []
    for g, spec in controls.LAYOUT:
        out.append(changes.get(spec.name, v.get((g, spec.name), spec.default)) if g in (controls.group_of(method), controls.ADAPT)
                   else spec.default)
    return out


def run_to_end(sid: str, timeout: float = 120):
    s = STORE.get(sid)
    job = JOBS.get(s.id, s.job_id)
    assert job.done.wait(timeout), "the job did not finish"
    return job


@pytest.fixture
def pool(tiny8_dir):
    from wemoe_core.pools import load_pool

    return load_pool("tiny8")


@pytest.fixture
def sid(pool):
    return STORE.resume(None).id


def test_controls_cover_every_declared_hyperparameter():
    from dataclasses import fields

    from wemoe_core.running.adapt import AdaptParams

    declared = {(controls.group_of(m), f.name) for m in METHODS for f in fields(METHODS[m].params)}
    declared |= {(controls.ADAPT, f.name) for f in fields(AdaptParams)}
    assert declared == {(g, s.name) for g, s in controls.LAYOUT}
    kinds = {s.name: type(controls.component(s, s.default, 500)).__name__ for g, s in controls.LAYOUT if g == "TiesParams"}
    assert kinds == {"scale": "Slider", "density": "Slider", "topk": "Dropdown"}
    lr = next(s for g, s in controls.LAYOUT if s.name == "lr")
    assert isinstance(controls.component(lr, 1e-4, 500), gr.Number)
    steps = next(s for g, s in controls.LAYOUT if s.name == "steps")
    assert controls.component(steps, 200, 500).maximum == 500           # capped by WEMOE_MAX_STEPS


def test_recipe_and_paper_presets_differ_and_are_named(pool):
    if pool.recipes.get("wemoe", {}).get("hparams", {}).get("routing") != "softmax":
        pytest.skip("the installed Tiny-8 zoo recommends no softmax-routed WEMoE")
    recipe = controls.preset_values(pool, "wemoe", "recipe", 10_000)
    paper = controls.preset_values(pool, "wemoe", "paper", 10_000)
    assert recipe[("WEMoEParams", "routing")] == "softmax" and paper[("WEMoEParams", "routing")] == "dense"
    assert "recipe" in controls.recipe_note(pool, "wemoe") and "paper" in controls.recipe_note(pool, "wemoe")
    if "wemoe_paper" in pool.recipes:                                  # the pool's scaled paper settings
        assert paper[("adapt", "lr")] == pool.recipes["wemoe_paper"]["adapt"]["lr"]
        hp, ap = controls.split_values("wemoe", values_for(pool, "wemoe", "paper"))
        assert runs.variant_of(pool, "wemoe", hp, ap) == "paper"
    hp, ap = controls.split_values("ties", values_for(pool, "ties", density=0.5))
    assert hp == {"scale": 1.0, "density": 0.5, "topk": "global"} and ap is None


def _shown(updates) -> set[tuple[str, str]]:
    return {(g, s.name) for (g, s), u in zip(controls.LAYOUT, updates) if u["visible"]}


def test_show_method_shows_only_its_controls(pool):
    out = callbacks.show_method("ties", "tiny8", "paper")
    n = len(controls.ADVANCED_GROUPS)
    text, preset, advanced, ctls = out[0], out[1], out[2], out[3 + n:]
    assert preset["visible"] is False                                   # no tiny8 recipe for TIES: one choice
    assert "TIES" in text and "arxiv.org" in text
    assert _shown(ctls) == {("TiesParams", n) for n in ("scale", "density", "topk")}
    assert advanced["visible"] is False                                 # nothing else to tune
    text, preset, advanced, *rest = callbacks.show_method("average", "tiny8", "recipe")
    assert not _shown(rest[n:]) and "no settings" in text and advanced["visible"] is False
    assert preset["visible"] is False and not any(h["visible"] for h in rest[:n])


def test_controls_follow_the_declarations(pool):
    """WEMoE: its three main settings up front, the rest in the accordion; rank and density only
    with their compression, balance only with softmax routing; hidden settings are sent as
    their defaults; the accordion's title says what differs from the recipe."""
    n = len(controls.ADVANCED_GROUPS)
    text, preset, advanced, *rest = callbacks.show_method("wemoe", "tiny8", "recipe")
    heads, ctls = rest[:n], rest[n:]
    assert [h["visible"] for h in heads] == [g in ("WEMoEParams", controls.ADAPT) for g in controls.ADVANCED_GROUPS]
    shown = _shown(ctls)
    main = {n for (g, n) in shown if (g, n) in controls.MAIN}
    assert main == {"router_depth", "steps", "lr"} == set(METHODS["wemoe"].main)
    assert all(i < controls.N_MAIN for i, (g, s) in enumerate(controls.LAYOUT) if (g, s.name) in controls.MAIN)
    assert ("WEMoEParams", "rank") not in shown and ("WEMoEParams", "density") not in shown
    assert advanced["visible"] and advanced["label"].startswith("Advanced settings")
    values = values_for(pool, "wemoe")
    at = {(g, s.name): i for i, (g, s) in enumerate(controls.LAYOUT)}
    softmax = values[at["WEMoEParams", "routing"]] == "softmax"
    assert (("adapt", "balance") in shown) == softmax
    if pool.recipes.get("wemoe"):
        assert "as in the tiny8 recipe" in advanced["label"]
    lowrank = values_for(pool, "wemoe", compress="lowrank", blocks=2, routing="dense")
    adv, *vis = callbacks.refresh_controls("wemoe", "tiny8", *lowrank)
    shown = _shown(vis[n:])
    assert ("WEMoEParams", "rank") in shown and ("WEMoEParams", "density") not in shown
    assert ("adapt", "balance") not in shown
    assert "changed from" in adv["label"] and "blocks 2" in adv["label"] and "compress lowrank" in adv["label"]
    hp, ap = controls.split_values("wemoe", values_for(pool, "wemoe", routing="dense", balance=3.0))
    assert hp["routing"] == "dense" and ap["balance"] == 0.0            # hidden: sent as its default
    hp, ap = controls.split_values("adamerging_layer", values_for(pool, "adamerging_layer", balance=3.0))
    assert ap["balance"] == 0.0 and set(hp) == {"init", "clamp"}


def test_a_recipe_setting_that_stops_applying_falls_back_to_its_default(pool):
    """The API and the CLI start from the recipe too: switching WEMoE to dense routing drops the
    recipe's load balancing (softmax only) instead of refusing; a balance the caller asked for
    is kept (and adapt() says why it cannot be)."""
    from wemoe_core.running.workbench import recipe_for

    if not pool.recipes.get("wemoe", {}).get("adapt", {}).get("balance"):
        pytest.skip("the installed Tiny-8 zoo's recipe has no load balancing")
    assert recipe_for(pool, "wemoe")[2].balance > 0
    assert recipe_for(pool, "wemoe", {"routing": "dense"})[2].balance == 0.0
    assert recipe_for(pool, "wemoe", {"routing": "dense"}, {"balance": 2.0})[2].balance == 2.0


def test_one_task_and_absurd_values_give_messages_not_jobs(sid, pool):
    msg = callbacks.start(sid, "tiny8", ["scenes"], "task_arithmetic", *values_for(pool, "task_arithmetic"))[0]
    assert msg.startswith("⚠️") and "at least 2" in msg
    msg = callbacks.start(sid, "tiny8", pool.tasks, "task_arithmetic", *values_for(pool, "task_arithmetic", scale=1e9))[0]
    assert "scale" in msg and "range" in msg
    msg = callbacks.start(sid, "tiny8", pool.tasks, "wemoe", *values_for(pool, "wemoe", lr=float("nan")))[0]
    assert "lr" in msg and "finite" in msg
    assert "at least 2" in callbacks.select_tasks(sid, ["scenes"])
    assert STORE.get(sid).job_id is None


def test_static_merge_runs_and_lands_in_every_view(sid, pool):
    status = callbacks.start(sid, "tiny8", pool.tasks[:3], "task_arithmetic", *values_for(pool, "task_arithmetic"))[0]
    assert status.startswith("Started")
    assert run_to_end(sid).progress.state == DONE
    out = callbacks.poll(sid, -1)
    views = dict(zip(callbacks.VIEW_OUTPUTS, out[6:]))
    assert views["explore_models"]["choices"] == [("Task arithmetic #1", "m1")]
    table = views["compare_df"]
    assert list(table["model"]) == ["Task arithmetic #1"] and table.at[0, "variant"] == "paper"
    assert out[4]["active"] is False                                     # the timer stops


def test_adaptation_reports_progress_and_stop_keeps_what_it_learned(sid, pool):
    callbacks.start(sid, "tiny8", pool.tasks[:3], "wemoe", *values_for(pool, "wemoe", steps=300))
    s = STORE.get(sid)
    job = JOBS.get(s.id, s.job_id)
    t0 = time.monotonic()
    while job.snapshot().step < 2:
        assert time.monotonic() - t0 < 120
        time.sleep(0.05)
    progress, status, entropy, routing, timer, seen = callbacks.poll(sid, -1)[:6]
    assert 'role="progressbar"' in progress and timer["active"] is True and seen >= 2
    assert {tr.name for tr in entropy.data} == {"Scenes", "Vehicles", "Aerial"}
    assert any(tr.type == "heatmap" for tr in routing.data)
    assert "Stopping" in callbacks.stop(sid)
    t_stop = time.monotonic()
    while job.snapshot().step >= 0 and job.progress.message.startswith("adapting"):
        time.sleep(0.02)
    assert time.monotonic() - t_stop < 5                                 # the loop stops between steps
    job.done.wait(120)
    assert job.progress.state == STOPPED and "keeps what it learned" in job.progress.message
    m = s.model(None)
    assert m.stopped and 0 < m.steps_done < 300 and m.run.table is not None


def test_jobs_are_private_and_limited(sid, pool):
    other = STORE.resume(None).id
    callbacks.start(sid, "tiny8", pool.tasks[:2], "wemoe", *values_for(pool, "wemoe", steps=300))
    s = STORE.get(sid)
    with pytest.raises(JobRefused, match="still running"):
        callbacks.submit(s, "tiny8", pool.tasks[:2], "wemoe", values_for(pool, "wemoe", steps=5))
    assert JOBS.get(other, s.job_id) is None                             # another session cannot see it
    assert callbacks.stop(other) == "Nothing is running."
    assert callbacks.poll(other, -1)[4]["active"] is False
    callbacks.stop(sid)
    run_to_end(sid)


def test_sessions_issue_new_ids_for_unknown_or_malformed_ones():
    a = STORE.resume(None)
    assert STORE.resume(a.id) is a
    assert STORE.resume("s-" + "x" * 32).id != "s-" + "x" * 32           # unknown: not adopted
    assert STORE.resume("../../etc").id.startswith("s-")
    assert STORE.for_api("abc").id == "api-abc" and STORE.for_api("a/b").id == "api-ab"


def test_export_files(sid, pool, tmp_path):
    from wemoe_core.sources.files import load_merged

    assert callbacks.export(sid, None)[0] is None
    callbacks.start(sid, "tiny8", pool.tasks[:2], "ties", *values_for(pool, "ties"))
    run_to_end(sid)
    paths, msg = callbacks.export(sid, "m1")
    names = sorted(p.rsplit("/", 1)[-1] for p in paths)
    assert names == ["results.csv", "ties-merging-1-recipe.json", "ties-merging-1.safetensors"]
    _, recipe = load_merged(next(p for p in paths if p.endswith(".safetensors")))
    assert recipe.method == "ties" and recipe.tasks == pool.tasks[:2]


def test_pools_status_lists_tiny8_and_reasons(pool):
    update, text = callbacks.pools_status()
    assert ("Tiny-8 (offline, CPU)", "tiny8") in [tuple(c) for c in update["choices"]]
    assert "available" in text
    out = callbacks.select_pool(None, "no-such-pool")
    assert out[-1].startswith("⚠️") and "unknown pool" in out[-1]

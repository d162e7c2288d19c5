"""The registry's declarations that UIs are built from: each method's main settings, and the
conditions (``when``) under which a setting applies."""
from __future__ import annotations

from dataclasses import asdict

from wemoe_core.merging.registry import METHODS
from wemoe_core.model.params import specs
from wemoe_core.running.adapt import AdaptParams


def _fields(method) -> dict:
    out = {s.name: s for s in specs(method.params)}
    if method.adaptive:
        out |= {s.name: s for s in specs(AdaptParams)}
    return out


def test_every_method_names_at_most_three_main_settings_of_its_own():
    for m in METHODS.values():
        own = _fields(m)
        assert len(m.main) <= 3 and len(set(m.main)) == len(m.main), m.name
        assert set(m.main) <= set(own), (m.name, set(m.main) - set(own))
        assert bool(m.main) == bool(own), f"{m.name}: name its main settings"
        assert not any(own[n].when for n in m.main), f"{m.name}: a main setting must always apply"


def test_conditions_name_a_real_setting_and_one_of_its_choices():
    every = {s.name: s for m in METHODS.values() for s in specs(m.params)} | {s.name: s for s in specs(AdaptParams)}
    conditional = [s for s in every.values() if s.when]
    assert {s.name for s in conditional} >= {"rank", "balance"}
    for s in conditional:
        other, allowed = s.when
        assert other in every and every[other].choices and set(allowed) <= set(every[other].choices), s


def test_a_setting_applies_only_when_its_condition_holds():
    wemoe = {s.name: s for s in specs(METHODS["wemoe"].params)}
    rank, density = wemoe["rank"], wemoe["density"]
    assert rank.applies({"compress": "lowrank"}) and not rank.applies({"compress": "none"})
    assert wemoe["factor_math"].applies({"compress": "lowrank"}) and not wemoe["factor_math"].applies({"compress": "sparse"})
    assert density.applies({"compress": "sparse"}) and not density.applies({"compress": "lowrank"})
    balance = next(s for s in specs(AdaptParams) if s.name == "balance")
    assert balance.applies({"routing": "softmax"}) and not balance.applies({"routing": "dense"})
    assert not balance.applies({"init": 0.3})               # AdaMerging has no routing: never applies
    assert wemoe["init_lambda"].applies({})


def test_wemoe_paper_starts_from_its_own_recipe_never_from_the_tuned_one():
    """``wemoe_paper`` is the paper's method: a pool may scale its adaptation (Tiny-8: the lr and
    the number of steps) but the tuned ``wemoe`` recipe never leaks into it; without a recipe of
    its own it is exactly the declared defaults, and so is the app's "paper" preset."""
    from types import SimpleNamespace

    from wemoe_core.merging.params import WEMoEParams
    from wemoe_core.running.recipes import paper_recipe, recipe_for

    tuned = {"hparams": {"routing": "softmax", "upscale_attention": True}, "adapt": {"objective": "infomax", "lr": 0.01}}
    bare = SimpleNamespace(name="bare", recipes={"wemoe": tuned})
    method, hp, ap = recipe_for(bare, "wemoe_paper")
    assert method == "wemoe" and hp == asdict(WEMoEParams()) and ap == AdaptParams()
    assert recipe_for(bare, "wemoe")[1]["routing"] == "softmax"
    scaled = SimpleNamespace(name="scaled", recipes={"wemoe": tuned, "wemoe_paper": {"adapt": {"lr": 1.5e-3, "steps": 400}}})
    _, hp, ap = recipe_for(scaled, "wemoe_paper")
    assert hp["routing"] == "dense" and not hp["upscale_attention"] and ap.objective == "entropy"
    assert (ap.lr, ap.steps) == (1.5e-3, 400)
    assert paper_recipe(scaled, "wemoe") == (hp, ap)
    assert paper_recipe(scaled, "ties")[1] is None and paper_recipe(bare, "wemoe")[1] == AdaptParams()

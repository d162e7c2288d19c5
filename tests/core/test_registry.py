"""The registry's declarations that UIs are built from: each method's main settings, and the
conditions (``when``) under which a setting applies."""
from __future__ import annotations

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
    assert density.applies({"compress": "sparse"}) and not density.applies({"compress": "lowrank"})
    balance = next(s for s in specs(AdaptParams) if s.name == "balance")
    assert balance.applies({"routing": "softmax"}) and not balance.applies({"routing": "dense"})
    assert not balance.applies({"init": 0.3})               # AdaMerging has no routing: never applies
    assert wemoe["init_lambda"].applies({})

"""Which settings a run starts from: the benchmark's method variants, and the pool's recipe under
the variant's overrides under the caller's values. Torch-free, so a page can show a method's
starting values without importing torch."""
from __future__ import annotations

from dataclasses import asdict

from ..merging.registry import METHODS, get_method
from ..model.params import specs, validate
from ..pools.base import Pool
from .params import ADAPTATION, AdaptParams

# The benchmark's method variants: name -> (registry method, hyperparameter overrides).
# A variant listed in OWN_RECIPE starts from the pool's recipe under its own name (or the
# method's defaults when the pool has none), never from the method's tuned recipe.
VARIANTS: dict[str, tuple[str, dict]] = {
    "pretrained": ("pretrained", {}),
    "individual": ("individual", {}),
    "average": ("average", {}),
    "task_arithmetic": ("task_arithmetic", {}),
    "ties": ("ties", {}),
    "adamerging_task": ("adamerging_task", {}),
    "adamerging_layer": ("adamerging_layer", {}),
    "wemoe_depth0": ("wemoe", {"router_depth": 0}),
    "wemoe_depth1": ("wemoe", {"router_depth": 1}),
    "wemoe": ("wemoe", {}),
    "wemoe_paper": ("wemoe", {}),
    "oracle": ("wemoe", {}),
}

# wemoe_paper: the paper's WEMoE (dense routing of the MLPs, plain entropy, Adam); a pool may set
# only the adaptation's length and learning rate under this name (Tiny-8: see its recipes.json).
OWN_RECIPE = frozenset({"wemoe_paper"})


def recipe_for(pool: Pool, variant: str, hparams: dict | None = None,
               adapt_params: AdaptParams | dict | None = None) -> tuple[str, dict, AdaptParams | None]:
    """(registry method, validated hyperparameters, adaptation params or None) for a variant,
    starting from the pool's recommended recipe, then the variant's, then the caller's."""
    if variant not in VARIANTS and variant not in METHODS:
        raise ValueError(f"unknown method {variant!r}; choose one of: {', '.join(VARIANTS)}")
    method, overrides = VARIANTS.get(variant, (variant, {}))
    rec_h, rec_a = pool_recipe(pool, variant if variant in OWN_RECIPE else method)
    m = get_method(method)
    hp = asdict(m.hparams(**{**rec_h, **overrides, **(hparams or {})}))
    if not m.adaptive:
        return method, hp, None
    if isinstance(adapt_params, AdaptParams):
        return method, hp, adapt_params
    given = dict(adapt_params or {})
    ad = _applying(AdaptParams, {**rec_a, **given}, keep=given, context=hp)
    return method, hp, validate(AdaptParams, ad, owner=ADAPTATION)


def paper_recipe(pool: Pool, method: str) -> tuple[dict, AdaptParams | None]:
    """The paper's settings of a registry method on ``pool``: its declared defaults, except where
    the pool scales them under a ``<method>_paper`` recipe (Tiny-8's WEMoE: the adaptation's length
    and learning rate)."""
    if f"{method}_paper" in VARIANTS:
        _, hp, ap = recipe_for(pool, f"{method}_paper")
        return hp, ap
    m = get_method(method)
    return asdict(m.hparams()), (AdaptParams() if m.adaptive else None)


def _applying(cls, values: dict, keep: dict, context: dict) -> dict:
    """``values`` with each setting the recipe (not the caller) gave reset to its default when it
    does not apply under the other settings (a recipe's ``balance`` once routing is "dense")."""
    out = dict(values)
    for spec in specs(cls):
        if spec.name in out and spec.name not in keep and not spec.applies({**context, **out}):
            out[spec.name] = spec.default
    return out


def pool_recipe(pool: Pool, method: str) -> tuple[dict, dict]:
    """The pool's recommended hyperparameters and adaptation settings for a registry method."""
    recipes = getattr(pool, "recipes", {}) or {}
    r = recipes.get(method, {})
    return dict(r.get("hparams", {})), dict(r.get("adapt", {}))

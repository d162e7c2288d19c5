"""The main flow in Debian's chromium (playwright): models, a static merge, a WEMoE job that is
followed across a page reload and stopped, explore (heatmap, hover, overlay), compare, learn,
export; and the settings of every method (one screenshot each, in panels/). Screenshots go to
$WEMOE_SCREENSHOTS (default: the test's temporary folder)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.app.conftest import app_url, tiny8_dir  # noqa: F401 - fixtures

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium: apt-get install -y chromium")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LONG = 120_000          # ms: this CPU is shared


@pytest.fixture(scope="module")
def page(app_url):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1360, "height": 900})
        pg.set_default_timeout(LONG)
        pg.goto(app_url)
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = Path(os.environ.get("WEMOE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def shot(target, path: Path, **kw) -> None:
    """A screenshot of a page or element, stored as a 256-colour PNG (README-sized)."""
    from PIL import Image

    target.screenshot(path=path, **kw)
    Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=re.compile(name)).click()


def run_method(page, name: str) -> None:
    tab(page, "Merge")
    page.get_by_label(name, exact=True).check()
    page.locator("#wm-run").click()


def test_models_tab_lists_tasks_and_pools(page, shots):
    page.get_by_text("fine-tuned accuracy").first.wait_for()
    page.get_by_text("clip-vit-b32").first.wait_for()                      # real pools with their reason
    shot(page, shots / "models.png")


def test_each_method_shows_only_the_settings_that_apply(page, shots):
    """Per method: its main settings up front (the registry's ``main``), the rest in a closed
    accordion whose title compares them with the recipe; rank appears only with low-rank experts."""
    from app import controls
    from wemoe_core.merging.registry import METHODS

    tab(page, "Merge")
    panel = page.locator("#wm-run").locator("xpath=ancestor::div[contains(@class,'column')][1]")
    (shots / "panels").mkdir(exist_ok=True)
    for m in METHODS.values():
        page.get_by_label(m.pretty_name, exact=True).check()
        page.get_by_text(f"{m.pretty_name}:").first.wait_for()
        for i, (g, spec) in enumerate(controls.LAYOUT[:controls.N_MAIN]):
            wanted = g in controls.groups_of(m.name) and spec.name in m.main
            control = page.locator(f"#{controls.elem_id(g, spec.name)}")
            control.wait_for(state="visible" if wanted else "hidden")
        advanced = page.locator("#wm-advanced")
        assert advanced.is_visible() == (m.name in ("wemoe", "adamerging_task", "adamerging_layer")), m.name
        shot(panel, shots / "panels" / f"{m.name}.png")
    page.get_by_label("WEMoE", exact=True).check()
    advanced = page.locator("#wm-advanced")
    advanced.get_by_text("Advanced settings").first.click()
    rank = page.locator(f"#{controls.elem_id('WEMoEParams', 'rank')}")
    assert not rank.is_visible()                                           # compress is "none"
    page.locator(f"#{controls.elem_id('WEMoEParams', 'compress')} input").first.click()
    page.get_by_role("option", name="lowrank").click()
    rank.wait_for(state="visible")
    advanced.get_by_text("changed from").first.wait_for()                  # the title says what differs
    assert "compress lowrank" in advanced.text_content()
    shot(panel, shots / "panels" / "wemoe-advanced.png")
    page.locator(f"#{controls.elem_id('WEMoEParams', 'compress')} input").first.click()
    page.get_by_role("option", name="none").click()                        # as it was, for the runs below
    rank.wait_for(state="hidden")
    advanced.get_by_text("Advanced settings").first.click()


def test_static_merge_then_followed_wemoe_job(page, app_url, shots):  # noqa: F811
    run_method(page, "Task arithmetic")
    page.get_by_text(re.compile(r"Task arithmetic #1 finished")).wait_for()
    run_method(page, "WEMoE")
    page.locator("#wm-entropy .js-plotly-plot").wait_for()                # live curves are drawn
    page.locator("#wm-routing .js-plotly-plot .hm").first.wait_for()
    page.locator("#wm-progress").get_by_text(re.compile(r"step [3-9]/")).wait_for()   # curves, not dots
    shot(page, shots / "adapting.png")
    page.reload()
    tab(page, "Merge")
    page.get_by_text("is running: following it again").wait_for()          # a reload finds the job
    page.locator("#wm-entropy .js-plotly-plot").wait_for()
    page.locator("#wm-stop").click()
    page.get_by_text(re.compile(r"WEMoE #2 stopped after \d+ of")).wait_for()


def test_explore_shows_predictions_heatmap_and_overlay(page, shots):
    tab(page, "Explore")
    page.locator("#wm-gallery button").nth(10).click()                     # an example of a task
    page.locator("#wm-preds table.wm-preds").wait_for()
    heat = page.locator("#wm-heatmap .js-plotly-plot")
    heat.locator(".hm").first.wait_for()
    over = page.locator("#wm-overlay .js-plotly-plot")
    over.locator("image").first.wait_for()                                 # the picture under the grid
    assert over.locator(".hm").count() >= 1                                 # and the router weights on it
    assert page.locator("#wm-preds th", has_text="WEMoE #2").count() == 1
    heat.scroll_into_view_if_needed()
    box = heat.locator(".nsewdrag").first.bounding_box()
    for k in range(3):                                                      # plotly needs real mouse moves
        page.mouse.move(box["x"] + box["width"] * (0.3 + 0.02 * k), box["y"] + box["height"] * 0.3, steps=3)
    heat.locator(".hoverlayer .hovertext").first.wait_for()                # hover shows exact values
    assert "weight" in heat.locator(".hoverlayer").text_content()
    shot(page, shots / "explore.png")
    page.locator("#wm-gallery").scroll_into_view_if_needed()
    shot(page, shots / "explore-predictions.png")


def test_compare_learn_export(page, shots):
    tab(page, "Compare")
    page.locator("#wm-compare").get_by_text("WEMoE #2").first.wait_for()
    page.locator("#wm-compare-plot .js-plotly-plot").wait_for()
    page.locator("#wm-share .js-plotly-plot .hm").first.wait_for()        # the routing-analysis matrix
    shot(page, shots / "compare.png", full_page=True)
    tab(page, "Learn")
    page.locator("#wm-learn-status").get_by_text("Measured live").wait_for(timeout=4 * LONG)
    page.locator("#wm-learn-memory").scroll_into_view_if_needed()
    shot(page, shots / "learn.png")
    tab(page, "Export")
    page.locator("button", has_text="Prepare files").click()
    files = page.locator("#wm-export-files")
    files.locator("td.filename[aria-label='results.csv']").wait_for()
    assert files.locator("td.filename[aria-label$='.safetensors']").count() >= 1

"""scripts/tiny8_tables.py: the README's tables and the curves figure from a saved `evaluate --json`."""
import pytest
from PIL import Image

from .conftest import load_script


@pytest.fixture(scope="module")
def tables():
    return load_script("tiny8_tables")


def _results(curves: dict) -> dict:
    acc = {"individual": {"a": 90.0, "b": 92.0, "avg": 91.0}, "oracle": {"a": 88.0, "b": 90.0, "avg": 89.0},
           "task_arithmetic": {"a": 70.0, "b": 74.0, "avg": 72.0}}
    return {"pool": "tiny8", "tasks": ["a", "b"], "accuracy": acc, "curves": curves}


def test_curve_png_draws_each_curve_in_its_colour(tables, tmp_path):
    res = _results({
        "wemoe": [{"step": 0, "entropy": None, "accuracy": 70.0}, {"step": 50, "entropy": 0.5, "accuracy": 80.0},
                  {"step": 100, "entropy": 0.3, "accuracy": 86.0}],
        "adamerging_layer": [{"step": 0, "entropy": None, "accuracy": 72.0}, {"step": 100, "entropy": 0.6, "accuracy": 74.0}],
    })
    out = tmp_path / "curves.png"
    tables.curve_png(res, out)
    img = Image.open(out).convert("RGB")
    assert img.size == (900, 520)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 16)}
    assert tables.COLORS[0] in colours and tables.COLORS[1] in colours     # one line per method
    assert (128, 128, 128) in colours                                       # the dashed references


def test_curve_png_says_what_to_do_without_curves(tables, tmp_path):
    with pytest.raises(ValueError, match="--curve-every"):
        tables.curve_png(_results({}), tmp_path / "x.png")


def test_curve_table_has_a_row_per_method_and_quantity(tables):
    res = _results({"wemoe": [{"step": 0, "entropy": None, "accuracy": 70.0}, {"step": 50, "entropy": 0.5, "accuracy": 80.0}]})
    rows = tables.curve_table(res).splitlines()
    assert rows[0] == "| step | 0 | 50 |"
    assert "| wemoe entropy |  | 0.50 |" in rows and "| wemoe accuracy | 70.0 | 80.0 |" in rows

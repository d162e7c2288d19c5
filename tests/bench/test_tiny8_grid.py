"""scripts/tiny8_grid.py: settings of a method on the shipped zoo, from one command line."""
import json

import pytest

from .conftest import ROOT, load_script

ZOO = ROOT / "assets" / "tiny8"


@pytest.fixture(scope="module")
def grid():
    return load_script("tiny8_grid")


def test_spec_parsing(grid):
    assert grid.parse_spec("ties:density=0.5,scale=1.5") == ("ties", {"density": 0.5, "scale": 1.5}, None)
    assert grid.parse_spec("wemoe@steps=800") == ("wemoe", None, {"steps": 800})
    assert grid.parse_spec("wemoe_paper:blocks=2@lr=0.01,schedule=constant") == (
        "wemoe_paper", {"blocks": 2}, {"lr": 0.01, "schedule": "constant"})
    with pytest.raises(ValueError, match="VARIANT"):
        grid.parse_spec(":scale=1")


@pytest.mark.skipif(not (ZOO / "manifest.json").is_file(), reason="the shipped Tiny-8 zoo is not in this checkout")
def test_identities_on_the_shipped_zoo(grid, tmp_path, capsys):
    """λ 0 gives the pre-trained tower, the default λ is 0.3, and a task vector trimmed to
    density 1 and added alone is the fine-tuned model: the manifest's accuracies."""
    acc = json.loads((ZOO / "manifest.json").read_text())["accuracy"]
    out = tmp_path / "runs.jsonl"
    grid.main(["task_arithmetic:scale=0", "task_arithmetic:scale=0.3", "task_arithmetic", "--trim-alone", "1",
               "--out", str(out)])
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["spec"] for r in runs] == ["task_arithmetic:scale=0", "task_arithmetic:scale=0.3", "task_arithmetic"]
    assert runs[0]["acc"]["avg"] == pytest.approx(acc["pretrained"]["avg"], abs=0.01)
    assert runs[1]["acc"] == runs[2]["acc"]
    printed = capsys.readouterr().out
    trim = [json.loads(line) for line in printed.splitlines() if line.startswith("{") and "trim alone" in line][0]
    assert trim["avg"] == pytest.approx(acc["individual"]["avg"], abs=0.01)
    assert "| task_arithmetic:scale=0 |" in printed.split("| run |")[1]          # the table, best first

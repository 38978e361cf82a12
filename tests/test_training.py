"""The training script's CPU path: a short smoke run writes loadable weights and a full manifest entry."""

import json
import sys
from pathlib import Path

from qlib import zoo

ROOT = Path(__file__).resolve().parents[1]


def test_train_script_smoke_run_on_cpu(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import train_zoo
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    train_zoo.main(["--models", "v1_standard", "--epochs", "1", "--limit", "128", "--batch-size", "64",
                    "--out", str(tmp_path)])
    entry = json.loads((tmp_path / "manifest.json").read_text())["v1_standard"]
    assert entry["epochs"] == 1 and entry["seed"] == 0 and len(entry["sha256"]) == 64
    assert "--models v1_standard --epochs 1" in entry["command"] and entry["command"].endswith("--limit 128")
    model = zoo.load_model("v1_standard", tmp_path)
    assert model.count_params() == entry["params"]

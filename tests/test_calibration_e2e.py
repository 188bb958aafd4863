"""Temperature scaling on real data: a CE-trained model whose test ECE exceeds 0.03 is better calibrated after it."""

import json

from kdlab.config import load_recipe
from kdlab.train.engine import train


def test_temperature_scaling_lowers_the_ece_of_a_miscalibrated_ce_model(tmp_path):
    # scikit-learn's handwritten digits (real scans, 8x8); a short run leaves CE clearly miscalibrated.
    recipe = load_recipe(raw={
        "data": {"source": "digits", "val_size": 0.2}, "model": {"name": "cnn_small8"}, "method": {"name": "ce"},
        "train": {"epochs": 3}, "optim": {"lr": 0.05, "weight_decay": 0.0}, "runtime": {"progress": False},
    })
    train(recipe, tmp_path / "run", quiet=True)
    evaluation = json.loads((tmp_path / "run" / "summary.json").read_text())["evaluation"]
    before, after = evaluation["calibration"]["before"], evaluation["calibration"]["after"]
    assert before["ece"] > 0.03
    assert after["ece"] < before["ece"]
    assert after["nll"] < before["nll"]
    assert after["acc"] == before["acc"]  # one temperature never changes a prediction
    assert before == evaluation["test"]

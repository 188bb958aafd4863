"""Learning-rate schedules as pure functions of the step."""

import math

import pytest

from kdlab.config import ScheduleConfig
from kdlab.train.schedule import learning_rate


def test_multistep_matches_repdistiller_convention():
    # RepDistiller: lr * 0.1 ** sum(epoch > [150, 180, 210]) with 1-based epochs == our 0-based milestones.
    schedule = ScheduleConfig(name="multistep", milestones=[150, 180, 210], gamma=0.1)
    for epoch_1based in (1, 150, 151, 180, 181, 210, 211, 240):
        expected = 0.05 * 0.1 ** sum(epoch_1based > m for m in (150, 180, 210))
        got = learning_rate((epoch_1based - 1) * 10 + 3, 10, 240, 0.05, schedule)
        assert got == pytest.approx(expected)


def test_warmup_is_linear_then_hands_over():
    schedule = ScheduleConfig(name="constant", warmup_epochs=2)
    lrs = [learning_rate(s, 5, 10, 1.0, schedule) for s in range(12)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10:] == [1.0, 1.0]


def test_cosine_goes_from_base_to_floor():
    schedule = ScheduleConfig(name="cosine", min_lr=0.01)
    total = 10 * 7
    assert learning_rate(0, 7, 10, 0.1, schedule) == pytest.approx(0.1)
    assert learning_rate(total // 2, 7, 10, 0.1, schedule) == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 35 / 70)))
    assert learning_rate(total, 7, 10, 0.1, schedule) == pytest.approx(0.01)


def test_linear_falls_from_base_to_the_end_value_after_the_warm_up():
    schedule = ScheduleConfig(name="linear", warmup_epochs=1, min_lr=0.1)
    steps = 4  # per epoch; 5 epochs: 4 warm-up steps, then 16 steps falling from 1.0 to 0.1
    lrs = [learning_rate(s, steps, 5, 1.0, schedule) for s in range(21)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[12] == pytest.approx(1.0 - 0.9 * 8 / 16)
    assert lrs[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))

import math

import pytest

from bitnet.schedules import LRSchedule, WDSchedule


def test_warmup_then_linear_to_zero():
    lr = LRSchedule("linear", peak=1e-3, warmup=10, total_steps=110, final_ratio=0.0)
    assert lr(0) == pytest.approx(1e-4)
    assert lr(9) == pytest.approx(1e-3)  # warmup end: the peak
    assert lr(10) == pytest.approx(1e-3)
    assert lr(60) == pytest.approx(0.5e-3)
    assert lr(109) == pytest.approx(1e-3 * 1 / 100)  # last update, one step short of zero
    assert lr.switch is None and lr.stage(109) == 1


def test_constant_and_cosine():
    assert LRSchedule("constant", 2e-3, 5, 100)(99) == 2e-3
    cos = LRSchedule("cosine", peak=1e-3, warmup=0, total_steps=100, final_ratio=0.1)
    assert cos(0) == pytest.approx(1e-3)
    assert cos(50) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert cos(99) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.99)))


def test_two_stage_lr_drops_onto_the_second_line_at_the_switch():
    lr = LRSchedule("two_stage", peak=1.5e-3, warmup=0, total_steps=10_000, final_ratio=0.0, stage2_peak=1e-3)
    assert lr.switch == 5000  # default: the midpoint
    assert lr(4999) == pytest.approx(1.5e-3 * (1 - 4999 / 10_000))
    assert lr(5000) == pytest.approx(1e-3 * 0.5)  # on the stage-2 line, not the stage-2 peak
    assert lr.stage(4999) == 1 and lr.stage(5000) == 2
    assert lr(9999) == pytest.approx(1e-3 * 1 / 10_000)
    # the FAQ's 100k run: 1.5e-3 -> 1e-3 virtual peaks give ~7.5e-4 -> ~5e-4 at the switch
    faq = LRSchedule("two_stage", peak=1.5e-3, warmup=375, total_steps=100_000, final_ratio=0.0,
                     stage2_peak=1e-3)
    assert faq(49_999) == pytest.approx(7.5e-4, rel=0.01) and faq(50_000) == pytest.approx(5.0e-4, rel=0.01)


def test_wd_step_function_and_cosine():
    wd = WDSchedule("two_stage", value=0.1, total_steps=10_000, stage2_value=0.0)
    assert wd(0) == 0.1 and wd(4999) == 0.1 and wd(5000) == 0.0 and wd(9999) == 0.0
    assert WDSchedule("constant", 0.1, 100)(99) == 0.1
    cos = WDSchedule("cosine", value=0.1, total_steps=101, final_value=0.0)
    assert cos(0) == pytest.approx(0.1) and cos(50) == pytest.approx(0.05) and cos(100) == pytest.approx(0.0)


def test_lr_and_wd_switches_move_independently():
    lr = LRSchedule("two_stage", 1.5e-3, 0, 1000, final_ratio=0.0, stage2_peak=1e-3, switch_step=300)
    wd = WDSchedule("two_stage", 0.1, 1000, stage2_value=0.0, switch_step=700)
    assert (lr.stage(299), lr.stage(300), wd.stage(699), wd.stage(700)) == (1, 2, 1, 2)
    assert wd(300) == 0.1 and wd(699) == 0.1  # the LR switch did not touch WD
    assert lr(700) == pytest.approx(1e-3 * 0.3) and lr(699) == pytest.approx(1e-3 * 0.301)  # nor WD the LR


def test_unknown_schedule_names_are_rejected():
    with pytest.raises(ValueError, match="lr.name=step: expected one of constant, linear, cosine, two_stage"):
        LRSchedule("step", 1e-3, 0, 10)
    with pytest.raises(ValueError, match="wd.name=linear: expected one of constant, two_stage, cosine"):
        WDSchedule("linear", 0.1, 10)

import pytest

import dali_mixup as dm


def test_defaults_follow_the_public_contract():
    cfg = dm.MixupConfig(1000)
    assert (cfg.mixup_alpha, cfg.cutmix_alpha, cfg.cutmix_minmax, cfg.prob, cfg.switch_prob) == (1.0, 0.0, None, 1.0, 0.5)
    assert (cfg.mode, cfg.correct_lam, cfg.label_smoothing, cfg.pairing) == ("batch", True, 0.0, "permutation")
    with pytest.raises(AttributeError):
        cfg.mixup_alpha = 0.2  # frozen


@pytest.mark.parametrize("kwargs,field", [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=-3), "num_classes"),
    (dict(mixup_alpha=-0.1), "mixup_alpha"),
    (dict(cutmix_alpha=-1), "cutmix_alpha"),
    (dict(mixup_alpha=float("nan")), "mixup_alpha"),
    (dict(prob=1.5), "prob"),
    (dict(prob=-0.01), "prob"),
    (dict(switch_prob=2), "switch_prob"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(label_smoothing=-0.1), "label_smoothing"),
    (dict(mode="sample"), "mode"),
    (dict(pairing="roll"), "pairing"),
    (dict(cutmix_minmax=(0.5, 0.2)), "cutmix_minmax"),
    (dict(cutmix_minmax=(0.0, 0.5)), "cutmix_minmax"),
    (dict(cutmix_minmax=(0.2, 1.2)), "cutmix_minmax"),
    (dict(cutmix_minmax=(0.3, 0.3)), "cutmix_minmax"),
    (dict(cutmix_minmax=(0.3,)), "cutmix_minmax"),
])
def test_bad_values_raise_value_error_naming_the_field(kwargs, field):
    args = dict(num_classes=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        dm.MixupConfig(**args)


@pytest.mark.parametrize("kwargs,field", [
    (dict(num_classes=10.0), "num_classes"),
    (dict(num_classes=True), "num_classes"),
    (dict(mixup_alpha="1"), "mixup_alpha"),
    (dict(correct_lam=1), "correct_lam"),
])
def test_bad_types_raise_type_error_naming_the_field(kwargs, field):
    args = dict(num_classes=10)
    args.update(kwargs)
    with pytest.raises(TypeError, match=field):
        dm.MixupConfig(**args)


def test_minmax_enables_cutmix_like_timm():
    cfg = dm.MixupConfig(10, mixup_alpha=0.0, cutmix_alpha=0.0, cutmix_minmax=[0.2, 0.8])
    assert cfg.cutmix_minmax == (0.2, 0.8)
    assert cfg.effective_cutmix_alpha == 1.0 and cfg.mixes


def test_smoothing_values_are_timms():
    off, on = dm.MixupConfig(10, label_smoothing=0.1).off_on
    assert off == 0.1 / 10 and on == 1.0 - 0.1 + 0.1 / 10


def test_no_alpha_or_zero_prob_never_mixes():
    assert not dm.MixupConfig(10, mixup_alpha=0.0).mixes
    assert not dm.MixupConfig(10, prob=0.0).mixes

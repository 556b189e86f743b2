import numpy as np
import pytest
from scipy import stats

import dali_mixup as dm

MODES = ["batch", "pair", "elem"]
PAIRINGS = ["permutation", "flip"]


def _equal(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("partner", "lam", "use_cutmix", "box"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("n", [1, 2, 3, 8, 33])
def test_shapes_dtypes_and_ranges(mode, pairing, n):
    cfg = dm.MixupConfig(10, mixup_alpha=0.8, cutmix_alpha=1.0, mode=mode, pairing=pairing)
    p = dm.sample_params(cfg, n, 17, 23, seed=5, step=2)
    assert p.partner.dtype == np.int64 and p.partner.shape == (n,)
    assert p.lam.dtype == np.float32 and p.lam.shape == (n,)
    assert p.use_cutmix.dtype == np.bool_ and p.use_cutmix.shape == (n,)
    assert p.box.dtype == np.int32 and p.box.shape == (n, 4)
    p.check(n, 17, 23)
    assert np.all((p.lam >= 0) & (p.lam <= 1))
    assert np.all(p.box[~p.use_cutmix] == 0)


def test_same_key_same_params_other_key_other_params():
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem")
    key = dict(seed=11, epoch=3, step=7, rank=1)
    a = dm.sample_params(cfg, 64, 224, 224, **key)
    b = dm.sample_params(cfg, 64, 224, 224, **key)
    assert _equal(a, b)
    for change in ("seed", "epoch", "step", "rank"):
        other = dict(key)
        other[change] += 1
        assert not _equal(a, dm.sample_params(cfg, 64, 224, 224, **other)), change


def test_global_random_state_is_untouched():
    np.random.seed(0)
    expected = np.random.rand(3)
    np.random.seed(0)
    dm.sample_params(dm.MixupConfig(10, cutmix_alpha=1.0, mode="elem"), 32, 8, 8, seed=1)
    assert np.array_equal(np.random.rand(3), expected)


def test_stream_is_pinned():
    """Golden values: a change of the stream (NumPy's Philox/SeedSequence/beta or our draw order) shows here,
    because it would break resuming runs and reproducing results across machines."""
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem")
    p = dm.sample_params(cfg, 6, 32, 32, seed=123, epoch=1, step=2, rank=0)
    assert p.partner.tolist() == GOLDEN["partner"]
    assert p.use_cutmix.tolist() == GOLDEN["use_cutmix"]
    assert p.box.tolist() == GOLDEN["box"]
    np.testing.assert_allclose(p.lam, GOLDEN["lam"], rtol=0, atol=1e-7)


# recorded with NumPy 2.4 on x86_64
GOLDEN = {
    "partner": [2, 0, 4, 5, 1, 3],
    "use_cutmix": [False, False, True, False, False, True],
    "box": [[0, 0, 0, 0], [0, 0, 0, 0], [3, 23, 14, 32], [0, 0, 0, 0], [0, 0, 0, 0], [12, 32, 0, 25]],
    "lam": [0.2936519980430603, 0.7232742309570312, 0.6484375, 0.2706053853034973, 0.9387689232826233, 0.51171875],
}


@pytest.mark.parametrize("n", [2, 3, 5, 64, 257])
def test_permutation_is_a_derangement(n):
    for step in range(20):
        for mode in ("batch", "elem"):
            p = dm.sample_params(dm.MixupConfig(10, mode=mode), n, 4, 4, step=step)
            assert sorted(p.partner.tolist()) == list(range(n))
            assert not np.any(p.partner == np.arange(n))


def test_derangement_partner_is_uniform():
    counts = np.zeros(6, int)
    for step in range(3000):
        counts[dm.sample_params(dm.MixupConfig(10), 6, 4, 4, step=step).partner[0]] += 1
    assert counts[0] == 0
    # uniform over the 5 other samples
    assert stats.chisquare(counts[1:]).pvalue > 1e-3


@pytest.mark.parametrize("n", [2, 6, 7])
def test_flip_pairing_is_timms(n):
    for mode in MODES:
        p = dm.sample_params(dm.MixupConfig(10, mode=mode, pairing="flip"), n, 4, 4)
        assert p.partner.tolist() == list(range(n - 1, -1, -1))


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("n", [2, 8, 9])
def test_pair_mode_pairs_are_mutual_and_share_parameters(pairing, n):
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, cutmix_alpha=1.0, mode="pair", pairing=pairing)
    for step in range(10):
        p = dm.sample_params(cfg, n, 16, 16, step=step)
        assert np.array_equal(p.partner[p.partner], np.arange(n))
        assert np.array_equal(p.lam, p.lam[p.partner])
        assert np.array_equal(p.box, p.box[p.partner])
        alone = np.flatnonzero(p.partner == np.arange(n))
        assert len(alone) == n % 2
        assert np.all(p.lam[alone] == 1.0)


def test_batch_of_one_passes_through():
    for mode in MODES:
        p = dm.sample_params(dm.MixupConfig(10, cutmix_alpha=1.0, mode=mode), 1, 8, 8)
        assert p.partner.tolist() == [0] and p.lam.tolist() == [1.0] and not p.use_cutmix[0]


def test_batch_mode_shares_one_lambda_and_one_choice():
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, cutmix_alpha=1.0, mode="batch")
    for step in range(20):
        p = dm.sample_params(cfg, 9, 32, 32, step=step)
        assert len(set(p.lam.tolist())) == 1 and len(set(p.use_cutmix.tolist())) == 1
        assert len({tuple(b) for b in p.box.tolist()}) == 1


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_lambda_follows_beta(alpha):
    p = dm.sample_params(dm.MixupConfig(10, mixup_alpha=alpha, mode="elem"), 4000, 8, 8, seed=1)
    assert stats.kstest(p.lam.astype(np.float64), stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_batch_mode_lambda_follows_beta_across_steps():
    cfg = dm.MixupConfig(10, mixup_alpha=0.5)
    lam = [dm.sample_params(cfg, 4, 8, 8, seed=2, step=s).lam[0] for s in range(2000)]
    assert stats.kstest(np.float64(lam), stats.beta(0.5, 0.5).cdf).pvalue > 1e-3


def _within(freq, p, n):
    return abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("prob", [0.0, 0.3, 1.0])
def test_prob_is_the_frequency_of_mixed_samples(prob):
    n = 20000
    p = dm.sample_params(dm.MixupConfig(10, mixup_alpha=1.0, mode="elem", prob=prob), n, 8, 8, seed=3)
    assert _within(np.mean(p.lam < 1), prob, n)


@pytest.mark.parametrize("switch_prob", [0.0, 0.25, 1.0])
def test_switch_prob_is_the_frequency_of_cutmix(switch_prob):
    n = 20000
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem", switch_prob=switch_prob)
    p = dm.sample_params(cfg, n, 64, 64, seed=4)
    assert _within(np.mean(p.use_cutmix), switch_prob, n)


@pytest.mark.parametrize("minmax", [None, (0.2, 0.6)])
def test_cutmix_lambda_is_one_minus_clipped_box_area(minmax):
    h, w = 37, 53
    cfg = dm.MixupConfig(10, mixup_alpha=0.0, cutmix_alpha=1.0, cutmix_minmax=minmax, mode="elem")
    p = dm.sample_params(cfg, 2000, h, w, seed=5)
    assert p.use_cutmix.all()
    area = (p.box[:, 1] - p.box[:, 0]) * (p.box[:, 3] - p.box[:, 2])
    np.testing.assert_allclose(p.lam, 1 - area / (h * w), rtol=0, atol=1e-6)
    if minmax is not None:
        sides_h = p.box[:, 1] - p.box[:, 0]
        assert sides_h.min() >= int(h * 0.2) and sides_h.max() < int(h * 0.6)


def test_uncorrected_cutmix_keeps_the_drawn_lambda():
    cfg = dm.MixupConfig(10, mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False, mode="elem")
    p = dm.sample_params(cfg, 4000, 32, 32, seed=6)
    assert stats.kstest(p.lam.astype(np.float64), stats.beta(1, 1).cdf).pvalue > 1e-3


@pytest.mark.parametrize("size, side", [(2, 0), (10, 4)])
def test_minmax_boxes_on_small_images(size, side):
    """timm's rand_bbox_minmax: sides drawn in [int(S * 0.4), int(S * 0.5)): on 2 x 2 images that is 0 (every box
    empty, so λ = 1 and nothing is pasted), on 10 x 10 exactly 4 (a 4 x 4 box inside the image, λ = 1 - 16/100)."""
    cfg = dm.MixupConfig(10, mixup_alpha=0.0, cutmix_minmax=(0.4, 0.5), mode="elem")
    p = dm.sample_params(cfg, 16, size, size)
    p.check(16, size, size)
    assert p.use_cutmix.all()
    y0, y1, x0, x1 = p.box.T
    assert (y1 - y0 == side).all() and (x1 - x0 == side).all()
    assert (y0 >= 0).all() and (y1 <= size).all() and (x0 >= 0).all() and (x1 <= size).all()
    np.testing.assert_array_equal(p.lam, np.float32(1 - side * side / (size * size)))


@pytest.mark.parametrize("kwargs,exc", [
    (dict(batch_size=0), ValueError), (dict(height=0), ValueError), (dict(width=-1), ValueError),
    (dict(batch_size=2.0), TypeError), (dict(seed=-1), ValueError), (dict(step=1.5), TypeError),
])
def test_bad_arguments(kwargs, exc):
    args = dict(batch_size=4, height=8, width=8)
    key = {k: kwargs.pop(k) for k in list(kwargs) if k in ("seed", "epoch", "step", "rank")}
    args.update(kwargs)
    with pytest.raises(exc, match=next(iter(kwargs or key))):
        dm.sample_params(dm.MixupConfig(10), args["batch_size"], args["height"], args["width"], **key)


def test_params_check_rejects_inconsistent_params():
    p = dm.MixParams([1, 0], np.float32([0.5, 0.5]), [False, True], np.int32([[0, 0, 0, 0], [0, 9, 0, 2]]))
    with pytest.raises(ValueError, match="box"):
        p.check(2, 8, 8)
    with pytest.raises(ValueError, match="batch size"):
        p.check(3, 16, 16)
    with pytest.raises(ValueError, match="partner"):
        dm.MixParams([2, 0], np.float32([0.5, 0.5]), [False, False], np.zeros((2, 4))).check(2, 8, 8)
    with pytest.raises(ValueError, match="lam"):
        dm.MixParams([1, 0], np.float32([1.5, 0.5]), [False, False], np.zeros((2, 4))).check(2, 8, 8)
    with pytest.raises(ValueError, match="same batch size"):
        dm.MixParams([1, 0], np.float32([0.5]), [False, False], np.zeros((2, 4)))


def test_batch_key_is_the_one_rule_every_placement_uses(monkeypatch):
    """Run k of a pipeline for epoch e with R runs an epoch is (e + k // R, k % R); the ``dali`` backend's parameter
    source and ``dali.mix`` ask ``batch_key`` (the loader's epilogue too: its key is (epoch, step))."""
    from types import SimpleNamespace

    from dali_mixup import baselines, dali, params
    assert params.batch_key(0, 3, 5) == (5, 0) and params.batch_key(7, 3, 5) == (7, 1)
    assert params.batch_key(7, None, 2) == (2, 7)
    asked = []

    def recorded(run, runs, first):
        asked.append((run, runs, first))
        return params.batch_key(run, runs, first)

    monkeypatch.setattr(baselines, "batch_key", recorded)
    monkeypatch.setattr(dali, "batch_key", recorded)
    info = SimpleNamespace(iteration=4, epoch_idx=0)
    cfg = dm.MixupConfig(10)
    baselines.MixParamSource(cfg, 2, lambda epoch, step: 8, seed=0, rank=0, runs_per_epoch=3, first_epoch=6)(info)
    key = dali._RunKey(2, 3, first_epoch=6)(info)[0]
    assert asked == [(4, 3, 6), (4, 3, 6)] and key.tolist() == [7, 1]

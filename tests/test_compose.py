"""Change-mask composition (predictor/compose.py) and the whole-field-of-view crop policy in training."""
import numpy as np
import pytest

from frameplan_core.errors import ConfigError
from frameplan_core.predictor import FramePredictor, PredictorConfig, SamplingConfig
from frameplan_core.predictor.compose import change_mask, compose

RNG = np.random.default_rng(3)
FRAME = RNG.integers(0, 256, (240, 320, 3), dtype=np.uint8)


def test_change_mask_marks_only_what_changed():
    ref = np.full((32, 32, 3), 100, np.uint8)
    pred = ref.copy()
    pred[10:14, 20:24] = 200
    m = change_mask(pred, ref, threshold=20, dilate=0, feather=0)
    assert m.dtype == np.float32 and m.shape == (32, 32)
    assert m[10:14, 20:24].min() == 1.0 and m.sum() == 16
    grown = change_mask(pred, ref, threshold=20, dilate=2, feather=0)
    assert grown.sum() > 16 and grown[0, 0] == 0.0
    soft = change_mask(pred, ref, threshold=20, dilate=0, feather=2)
    assert 0.0 < soft[12, 18] < 1.0  # feathered edge
    assert not change_mask(pred, ref, threshold=150, dilate=2, feather=2).any()  # below the threshold


def test_compose_keeps_input_where_mask_is_zero_and_resizes_the_mask():
    gen = np.zeros((240, 320, 3), np.uint8)
    mask = np.zeros((16, 16), np.float32)
    mask[:, 8:] = 1.0
    out = compose(gen, FRAME, mask)
    assert out.shape == FRAME.shape
    assert np.array_equal(out[:, :150], FRAME[:, :150])  # left half: the camera's own pixels, exactly
    assert not out[:, 170:].any()  # right half: generated


@pytest.fixture(scope="module")
def pred():
    cfg = PredictorConfig.preset("tiny-clip")
    cfg.resolution = 64
    return FramePredictor.from_config(cfg.validate(), seed=0, device="cpu")


@pytest.mark.parametrize("crop", ["center", "resize"])
def test_predict_with_composition_keeps_static_pixels_exact(pred, crop):
    """With a threshold above any possible change every pixel is the input's; with 0 composition is off."""
    pred.config.crop = crop
    try:
        full = pred.predict(FRAME, "stack the blocks", steps=2, output_size="input", compose=254)
        assert np.array_equal(full, FRAME)
        model = pred.predict(FRAME, "stack the blocks", steps=2, compose=254)
        from frameplan_core.image import fit

        assert np.array_equal(model, fit(FRAME, 64, crop))
        plain = pred.predict(FRAME, "stack the blocks", steps=2, output_size="input", compose=0)
        assert not np.array_equal(plain, FRAME)
        some = pred.predict(FRAME, "stack the blocks", steps=2, output_size="input", compose=40)
        assert some.shape == FRAME.shape
    finally:
        pred.config.crop = "center"


def test_compose_settings_validated_and_stored(tmp_path):
    with pytest.raises(ConfigError, match="compose"):
        SamplingConfig(compose=300).validate()
    with pytest.raises(ConfigError, match="compose_feather"):
        SamplingConfig(compose_feather=-1).validate()
    cfg = PredictorConfig.preset("tiny")
    cfg.sampling.compose = 12
    cfg.save(tmp_path / "frameplan.json")
    assert PredictorConfig.load(tmp_path / "frameplan.json").sampling.compose == 12
    old = cfg.to_dict()
    for k in ("compose", "compose_dilate", "compose_feather"):
        old["sampling"].pop(k)
    assert PredictorConfig.from_dict(old).sampling.compose == 0  # older folders: composition off


def test_resize_policy_training_sees_the_whole_field_of_view():
    """PairDataset with the resize policy squeezes the full frame (no centre crop) for input and target alike."""
    from frameplan_training.augment import paired_augment

    img = np.zeros((240, 320, 3), np.uint8)
    img[:, :20] = 255  # a stripe at the left border: cut away by the centre crop, kept by resize
    a_center, = paired_augment([img], None, 64, 64, policy="center")
    a_resize, = paired_augment([img], None, 64, 64, policy="resize")
    assert a_center[:, :2].max() == 0 and a_resize[:, :2].min() == 255
    b1, b2 = paired_augment([img, img], np.random.default_rng(0), 72, 64, 0.9, policy="resize")
    assert b1.shape == (64, 64, 3) and np.array_equal(b1, b2)


def test_training_crop_sets_the_model_policy():
    from frameplan_training.config import PredictorTrainConfig
    from frameplan_training.predictor_module import load_predictor

    cfg = PredictorTrainConfig(model="tiny-clip", crop="resize", image_size=64, crop_res=64, max_steps=1)
    assert load_predictor(cfg).config.crop == "resize"
    with pytest.raises(ConfigError, match="crop"):
        PredictorTrainConfig(crop="squash", max_steps=1)

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


def test_vae_decoder_only_keeps_the_latent_space(tmp_path):
    """train_encoder=false: the encoder, quant conv and scaling factor stay bit-identical; the decoder trains."""
    import torch
    from frameplan_training import run
    from frameplan_training.config import load_train_config
    from frameplan_training.synthetic import write_ip2p

    data = write_ip2p(tmp_path / "ip2p")
    tiny = ["image_size=40", "crop_res=32", "batch_size=4", "accelerator=cpu", "val_every_n_epochs=0",
            "sample_every_n_steps=0", "log_every_n_steps=1", "checkpoint_every_n_steps=1000"]
    first = run.train("vae", load_train_config("vae", None, tiny + ["max_steps=2"]), data, tmp_path / "v1",
                      enable_progress_bar=False)
    cfg = load_train_config("vae", None, tiny + ["max_steps=3", f"model={first.model_dir}", "train_encoder=false",
                                                 "crop=resize", "lr=1e-2", "warmup_steps=1", "export_fp16=false"])
    second = run.train("vae", cfg, data, tmp_path / "v2", enable_progress_bar=False)
    before = FramePredictor.from_pretrained(first.model_dir, device="cpu", dtype="float32")
    after = FramePredictor.from_pretrained(second.model_dir, device="cpu", dtype="float32")
    assert after.config.crop == "resize"
    a, b = before.vae.state_dict(), after.vae.state_dict()
    enc = [k for k in a if k.startswith(("encoder.", "quant_conv."))]
    dec = [k for k in a if k.startswith(("decoder.", "post_quant_conv."))]
    assert enc and all(torch.equal(a[k].float(), b[k].float()) for k in enc)
    assert any(not torch.equal(a[k].float(), b[k].float()) for k in dec)
    assert after.vae.config.scaling_factor == before.vae.config.scaling_factor

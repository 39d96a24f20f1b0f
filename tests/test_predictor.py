"""FramePredictor: shapes, determinism, guidance math, pass skipping, bad inputs, save/load (tiny random models)."""
import numpy as np
import pytest
import torch

from frameplan_core.errors import ConfigError, InputError, ModelError
from frameplan_core.predictor import (
    FramePredictor,
    PredictorConfig,
    SamplingConfig,
    guidance,
)
from frameplan_core.predictor.predictor import TINY_WEIGHTS
from frameplan_core.text import InstructionTruncatedWarning
from oracles import ZeroChangeOracle

RNG = np.random.default_rng(0)
FRAME = RNG.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # D435 size


def small(preset: str) -> PredictorConfig:
    """Preset architecture at 64² (8² latent) so the tests stay fast on a 2-core CPU."""
    cfg = PredictorConfig.preset(preset)
    cfg.resolution = 64
    return cfg.validate()


@pytest.fixture(scope="module")
def pred():
    return FramePredictor.from_config(small("tiny-clip"), seed=0, device="cpu")


def test_predict_shape_dtype_and_determinism(pred):
    a = pred.predict(FRAME, "strike the block with the hammer", steps=3, seed=5)
    b = pred.predict(FRAME, "strike the block with the hammer", steps=3, seed=5)
    c = pred.predict(FRAME, "strike the block with the hammer", steps=3, seed=6)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    full = pred.predict(FRAME, "strike the block with the hammer", steps=3, seed=5, output_size="input")
    assert full.shape == FRAME.shape and full.dtype == np.uint8


@pytest.mark.parametrize("sampler", ["euler_a", "ddim", "dpmpp"])
def test_samplers_are_seeded(pred, sampler):
    a = pred.predict(FRAME, "stack the blocks", steps=2, seed=1, sampler=sampler)
    assert np.array_equal(a, pred.predict(FRAME, "stack the blocks", steps=2, seed=1, sampler=sampler))


def test_predict_batch(pred):
    out = pred.predict_batch([FRAME, FRAME[:100, :77]], ["a", "b"], steps=2)
    assert [o.shape for o in out] == [(64, 64, 3)] * 2
    with pytest.raises(InputError, match="same non-zero number"):
        pred.predict_batch([FRAME], ["a", "b"])
    with pytest.raises(InputError, match="lists"):
        pred.predict_batch(FRAME, "a")


def _inputs(pred, b=2):
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(b, 4, 8, 8, generator=g)
    img = torch.randn(b, 4, 8, 8, generator=g)
    txt = pred.encode_text(["push the cup"] * b)
    return lat, img, txt, pred.uncond_embedding()


def three_pass_reference(unet, lat, t, img, txt, unc, s_t, s_i):
    """eps(∅,∅) + s_T(eps(I,T) − eps(I,∅)) + s_I(eps(I,∅) − eps(∅,∅)), three separate forwards."""
    unc = unc.expand_as(txt)
    def e(image, ctx):
        return unet(torch.cat([lat, image], 1), t, encoder_hidden_states=ctx).sample

    e_it, e_i, e_0 = e(img, txt), e(img, unc), e(torch.zeros_like(img), unc)
    return e_0 + s_t * (e_it - e_i) + s_i * (e_i - e_0)


@pytest.mark.parametrize("s_t, s_i, n_passes", [(7.5, 1.5, 3), (1.0, 1.0, 1), (7.5, 1.0, 2), (3.0, 3.0, 2),
                                                (1.0, 1.5, 3), (0.0, 1.0, 1)])
def test_guidance_matches_three_pass_formula_and_skips_useless_passes(pred, s_t, s_i, n_passes):
    lat, img, txt, unc = _inputs(pred)
    t = torch.tensor(500)
    seen = []
    hook = pred.unet.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0] if a else kw["sample"]).shape[0]),
                                               with_kwargs=True)
    try:
        with torch.no_grad():
            gp = guidance.plan(s_t, s_i)
            got = guidance.guided_eps(pred.unet, gp, lat, t, img, txt, unc)
    finally:
        hook.remove()
    with torch.no_grad():
        ref = three_pass_reference(pred.unet, lat, t, img, txt, unc, s_t, s_i)
    assert len(gp.passes) == n_passes and seen == [n_passes * lat.shape[0]]  # one batched forward
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_encode_latents_for_the_trainer(pred):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    cond = pred.encode_image_latents(x)
    mode = pred.vae.encode(x).latent_dist.mode()
    torch.testing.assert_close(cond, mode)  # unscaled
    tgt = pred.encode_target_latents(x, torch.Generator().manual_seed(0))
    dist = pred.vae.encode(x).latent_dist
    torch.testing.assert_close(tgt, dist.sample(torch.Generator().manual_seed(0)) * 0.18215)
    assert pred.decode_latents(tgt).shape == x.shape


def test_accepted_image_variants(pred):
    """Documented behaviour: gray and RGBA uint8 are converted; odd and tiny sizes are fitted."""
    for im in (FRAME[:, :, 0], FRAME[:, :, :1], np.dstack([FRAME, FRAME[:, :, :1]]), FRAME[:101, :33], FRAME[:1, :1]):
        assert pred.predict(im, "move left", steps=1).shape == (64, 64, 3)


@pytest.mark.parametrize("image, match", [
    (FRAME.astype(np.float32), "dtype"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((4, 4, 2), np.uint8), "channels"),
    (np.zeros((1, 4, 4, 3), np.uint8), "shape"),
    ([[0, 1]], "numpy array"),
])
def test_bad_images(pred, image, match):
    with pytest.raises(InputError, match=match):
        pred.predict(image, "move left", steps=1)


def test_bad_instructions_and_settings(pred):
    with pytest.raises(InputError, match="empty instruction"):
        pred.predict(FRAME, "  ", steps=1)
    with pytest.warns(InstructionTruncatedWarning):
        pred.predict(FRAME, "pick up the block and " * 30, steps=1)
    assert pred.predict(FRAME, "déplace le bloc ☕", steps=1).shape == (64, 64, 3)
    with pytest.raises(ConfigError, match="sampler"):
        pred.predict(FRAME, "x", sampler="heun")
    with pytest.raises(ConfigError, match="steps"):
        pred.predict(FRAME, "x", steps=0)
    with pytest.raises(ConfigError, match="text_scale"):
        pred.predict(FRAME, "x", text_scale=float("nan"))
    with pytest.raises(InputError, match="output_size"):
        pred.predict(FRAME, "x", output_size="big")


def test_save_load_round_trip(pred, tmp_path):
    pred.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "frameplan.json").is_file() and (tmp_path / "ckpt" / "model_index.json").is_file()
    q = FramePredictor.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert q.config.to_dict() == pred.config.to_dict()
    assert np.array_equal(q.predict(FRAME, "x", steps=2), pred.predict(FRAME, "x", steps=2))
    assert "tiny-clip" in q.describe() and "float32" in q.describe() and "UNet" in q.describe()


def test_minilm_tiny_preset_default_path(tmp_path):
    p = FramePredictor.from_config(small("tiny"), seed=0, device="cpu")
    assert p.text_encoder.kind == "minilm" and p.unet.config.cross_attention_dim == 384
    assert 1_000_000 <= p.parameter_counts()["unet"] <= 5_000_000
    assert p.config.sampling == SamplingConfig("dpmpp", 10, 7.5, 1.5)
    p.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "text_encoder").exists()  # MiniLM comes from its wheel, not copied
    q = FramePredictor.from_pretrained(tmp_path / "m", device="cpu")
    assert np.array_equal(q.predict(FRAME, "x", steps=1), p.predict(FRAME, "x", steps=1))


def test_presets_and_config_json(tmp_path):
    assert SamplingConfig.paper() == SamplingConfig("euler_a", 100, 7.5, 1.5)
    sd = PredictorConfig.preset("sd15")
    assert sd.unet["in_channels"] == 8 and sd.text_dim == 768 and sd.latent_size == 32
    sd.save(tmp_path / "f.json")
    assert PredictorConfig.load(tmp_path / "f.json") == sd
    with pytest.raises(ConfigError, match="unknown key"):
        PredictorConfig.from_dict({**sd.to_dict(), "typo": 1})
    with pytest.raises(ConfigError, match="cross_attention_dim"):
        PredictorConfig.from_dict({**sd.to_dict(), "text_encoder": "minilm"})
    with pytest.raises(ConfigError, match="preset"):
        PredictorConfig.preset("sdxl")


def test_embedded_presets_without_weights():
    with pytest.raises(ModelError, match="no weights ship"):
        FramePredictor.from_pretrained("sd15")
    if (TINY_WEIGHTS / "frameplan.json").is_file():  # once the training issue has shipped it
        assert FramePredictor.from_pretrained("tiny", device="cpu").config.text_encoder == "minilm"
    else:
        with pytest.raises(ModelError, match="train"):
            FramePredictor.from_pretrained("tiny")


def test_text_embeddings_cached_and_equal_to_fresh_encoding(pred):
    fresh = pred.text_encoder.encode(["lift the lid", "open the box"])
    torch.testing.assert_close(pred.encode_text(["lift the lid", "open the box"]), fresh)
    torch.testing.assert_close(pred.encode_text(["open the box", "lift the lid", "open the box"]),
                               fresh[[1, 0, 1]])
    many = [f"move block {i}" for i in range(100)]  # more than the cache holds in one call
    assert pred.encode_text(many).shape[0] == 100 and len(pred.text_cache) <= 64


def test_residual_target_turns_a_zero_change_into_a_copy(tmp_path):
    """target=residual: the sampled latent is the change from the input, so a sampler that returns "no change"
    yields the VAE reconstruction of the input (target=frame would decode the zero latent instead)."""
    p = FramePredictor.from_config(small("tiny-clip"), seed=0, device="cpu")
    p.unet = ZeroChangeOracle(p.scheduler.alphas_cumprod, p.vae.config.latent_channels)
    x = torch.from_numpy(FRAME[:64, :64]).permute(2, 0, 1)[None].float() / 127.5 - 1
    recon = p.decode_latents(p.encode_image_latents(x) * p.vae.config.scaling_factor)
    zero = p.decode_latents(torch.zeros_like(p.encode_image_latents(x)))
    as_u8 = lambda t: ((t[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()  # noqa: E731
    frame_out = p.predict(FRAME[:64, :64], "x", steps=4).astype(int)
    assert np.abs(frame_out - as_u8(zero).astype(int)).max() <= 1
    p.config.target = "residual"
    resid_out = p.predict(FRAME[:64, :64], "x", steps=4).astype(int)
    assert np.abs(resid_out - as_u8(recon).astype(int)).max() <= 1
    assert np.abs(resid_out - frame_out).mean() > 5  # the two parameterisations really differ here
    # the trainer's target and the sampler's output are inverse maps
    z_img, z_tgt = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(p.frame_latents(p.diffusion_target(z_tgt, z_img), z_img), z_tgt)
    torch.testing.assert_close(p.diffusion_target(z_tgt, z_img), z_tgt - 0.18215 * z_img)


def test_residual_target_is_saved_and_old_configs_load_as_frame(pred, tmp_path, capsys):
    d = pred.config.to_dict()
    assert d["target"] == "frame"
    old = {k: v for k, v in d.items() if k != "target"}  # configs saved before the field existed
    assert PredictorConfig.from_dict(old).target == "frame"
    with pytest.raises(ConfigError, match="target.*'delta'"):
        PredictorConfig.from_dict({**d, "target": "delta"})
    q = FramePredictor.from_config(small("tiny"), seed=0, device="cpu")
    q.config.target = "residual"
    q.save_pretrained(tmp_path / "r")
    assert FramePredictor.from_pretrained(tmp_path / "r", device="cpu").config.target == "residual"
    # diffusers' InstructPix2Pix pipeline must not take the folder for one of its own (it would decode the change)
    import json

    assert json.loads((tmp_path / "r" / "model_index.json").read_text())["_class_name"] != \
        "StableDiffusionInstructPix2PixPipeline"
    from frameplan_cli.main import main

    assert main(["bench", "predictor", "--model", str(tmp_path / "r"), "--device", "cpu"]) != 0
    assert "residual-target model" in capsys.readouterr().err
    # --resolution resizes a random preset only, to a size its VAE and UNet can divide
    assert main(["bench", "predictor", "--model", str(tmp_path / "r"), "--resolution", "64", "--device", "cpu"]) != 0
    assert "applies to a random --preset" in capsys.readouterr().err
    assert main(["bench", "predictor", "--resolution", "60", "--device", "cpu"]) != 0
    assert "--resolution 60: 60 must be a positive multiple of 32" in capsys.readouterr().err


def test_mean_of_samples_is_the_mean_of_the_individual_samples(pred, tmp_path):
    """samples=k runs k noise draws in one batch and averages the frames: the same draws come from a batch of k
    copies of the image with samples=1 (identical noise layout), so the mean must match to rounding."""
    kw = {"steps": 2, "seed": 3, "sampler": "euler_a"}  # ancestral: fresh noise every step too
    singles = pred.predict_batch([FRAME] * 3, ["stack the blocks"] * 3, samples=1, **kw)
    assert not np.array_equal(singles[0], singles[1])  # different draws
    mean = pred.predict(FRAME, "stack the blocks", samples=3, **kw)
    expect = np.mean([s.astype(np.float64) for s in singles], axis=0)
    assert np.abs(mean.astype(np.float64) - expect).max() <= 1.0  # uint8 rounding of each single
    assert mean.std() < np.mean([s.std() for s in singles])  # the mean is smoother than a sample
    # two images, two samples each: image i's mean is over rows i and n+i of the batch
    imgs, texts = [FRAME, FRAME[::-1]], ["stack the blocks", "hand the block over"]
    two = pred.predict_batch(imgs, texts, samples=2, **kw)
    rows = pred.predict_batch(imgs * 2, texts * 2, samples=1, **kw)
    for i in range(2):
        expect = (rows[i].astype(np.float64) + rows[2 + i]) / 2
        assert np.abs(two[i].astype(np.float64) - expect).max() <= 1.0
    assert np.abs(two[0].astype(np.float64) - two[1]).max() > 10  # not mixed across images
    # the model's default is stored and validated like every sampling setting
    q = FramePredictor.from_config(small("tiny"), seed=0, device="cpu")
    q.config.sampling.samples = 2
    q.save_pretrained(tmp_path / "m")
    assert FramePredictor.from_pretrained(tmp_path / "m", device="cpu").config.sampling.samples == 2
    old = q.config.to_dict()
    del old["sampling"]["samples"]  # configs saved before the field existed
    assert PredictorConfig.from_dict(old).sampling.samples == 1
    for bad in (0, 65, True, 1.5):
        with pytest.raises(ConfigError, match="samples"):
            pred.predict(FRAME, "x", steps=1, samples=bad)


@pytest.mark.slow  # the paper-default baseline runs 100-step references
def test_bench_times_the_mean_of_samples_beside_one_sample(tmp_path, capsys):
    import json

    from frameplan_cli.main import main

    q = FramePredictor.from_config(small("tiny"), seed=0, device="cpu")
    q.config.sampling = SamplingConfig(sampler="dpmpp", steps=2, samples=3)
    q.save_pretrained(tmp_path / "m")
    assert main(["bench", "predictor", "--model", str(tmp_path / "m"), "--device", "cpu", "--repeats", "2",
                 "--paper-repeats", "1", "--psnr-images", "1", "--batch", "2", "--json", str(tmp_path / "b.json")]) == 0
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["fast_mean"]["samples"] == 3 and len(r["fast_mean"]["runs"]) == 2 and r["fast_mean"]["median_s"] > 0
    assert "mean of 3 samples" in capsys.readouterr().out


def test_guidance_combines_half_precision_passes_in_float32():
    """bf16 UNet outputs: the weights s_T and s_I − s_T (7.5, −6) cancel, so the weighted sum must not be
    rounded to bf16 term by term (that loses several % of eps)."""
    gp = guidance.plan(7.5, 1.5)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, 4, 8, 8, generator=g)
    eps = torch.cat([base + 0.05 * torch.randn(2, 4, 8, 8, generator=g) for _ in gp.passes]).bfloat16()
    exact = sum(w * c for w, c in zip(gp.weights, eps.double().chunk(3)))
    got = guidance.combine(gp, eps)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=1e-6, atol=1e-5)


def test_seed_is_checked(pred):
    a = pred.predict(FRAME, "x", steps=1, seed=5)
    assert np.array_equal(a, pred.predict(FRAME, "x", steps=1, seed=np.int64(5)))
    assert np.array_equal(pred.predict(FRAME, "x", steps=1), pred.predict(FRAME, "x", steps=1, seed=0))
    for bad in (2**64, -(2**63) - 1, "3", 1.5, True):
        with pytest.raises(ConfigError, match="predict.seed"):
            pred.predict(FRAME, "x", steps=1, seed=bad)


@pytest.mark.parametrize("sampler, steps", [("ddim", 1000), ("dpmpp", 999), ("dpmpp", 1000)])
def test_step_counts_past_the_training_schedule_are_refused(pred, sampler, steps):
    """SD-1.x 'leading' spacing: these counts index past timestep 999 (IndexError, or NaN latents from
    dpmpp at 999); refused before any UNet evaluation."""
    with pytest.raises(ConfigError, match=f"steps={steps}"):
        pred.predict(FRAME, "x", steps=steps, sampler=sampler)


def test_negative_instruction_replaces_the_empty_text_of_the_text_free_passes(pred):
    """diffusers' negative prompt: the (I,∅) and (∅,∅) passes see the negative text; the (I,T) pass the instruction."""
    contexts = []
    hook = pred.unet.register_forward_pre_hook(lambda m, a, kw: contexts.append(kw["encoder_hidden_states"]),
                                               with_kwargs=True)
    try:
        got = pred.predict(FRAME, "stack the blocks with the left arm", steps=1, seed=3, text_scale=7.5,
                           image_scale=1.5, negative_instruction="stack the blocks with the right arm")
    finally:
        hook.remove()
    pos, neg = pred.encode_text(["stack the blocks with the left arm", "stack the blocks with the right arm"])
    ctx = contexts[0]  # passes in order cond, image_only, uncond
    assert ctx.shape[0] == 3
    torch.testing.assert_close(ctx[0], pos)
    torch.testing.assert_close(ctx[1], neg)
    torch.testing.assert_close(ctx[2], neg)
    plain = pred.predict(FRAME, "stack the blocks with the left arm", steps=1, seed=3, text_scale=7.5, image_scale=1.5)
    assert not np.array_equal(got, plain)
    # per image in a batch, with several samples; recorded in the Prediction's inputs
    out = pred.predict_batch([FRAME, FRAME[:, ::-1]], ["a", "b"], steps=1, samples=2, return_uncertainty=True,
                             negative_instructions=["c", "d"])
    assert [p.inputs["negative_instruction"] for p in out] == ["c", "d"]
    for bad, match in [("c", "one text per image"), (["c"], "one text per image"),
                       (["c", " "], r"negative_instruction\[1\]: empty")]:
        with pytest.raises(InputError, match=match):
            pred.predict_batch([FRAME, FRAME], ["a", "b"], steps=1, negative_instructions=bad)

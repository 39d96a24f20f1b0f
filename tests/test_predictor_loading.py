"""Checkpoint loading offline: our folder, diffusers InstructPix2Pix folder, SD-1.x single file (LDM key layout,
conv_in widened 4 -> 8), diffusers-pipeline parity, and clear errors for wrong checkpoints."""
import json

import numpy as np
import pytest
import torch
from ldm_layout import to_ldm_checkpoint
from safetensors.torch import save_file

from frameplan_core.errors import ModelError
from frameplan_core.predictor import FramePredictor, PredictorConfig
from frameplan_core.predictor.model import add_full_resolution_attention, add_text_pooling, widen_input

FRAME = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cfg():
    c = PredictorConfig.preset("tiny-clip")
    c.resolution = 64
    return c.validate()


@pytest.fixture(scope="module")
def pred(cfg):
    return FramePredictor.from_config(cfg, seed=3, device="cpu")


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_widen_input_keeps_old_weights_and_zeros_new():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**{**PredictorConfig.preset("tiny-clip").unet, "in_channels": 4})
    old_w, old_b = unet.conv_in.weight.detach().clone(), unet.conv_in.bias.detach().clone()
    widen_input(unet, 8)
    assert unet.conv_in.weight.shape[1] == 8 and unet.config.in_channels == 8
    assert torch.equal(unet.conv_in.weight[:, :4], old_w) and torch.equal(unet.conv_in.bias, old_b)
    assert torch.count_nonzero(unet.conv_in.weight[:, 4:]) == 0
    with pytest.raises(ModelError, match="narrow"):
        widen_input(unet, 4)


def test_text_pooling_starts_as_the_old_model_and_round_trips(cfg, tmp_path):
    p = FramePredictor.from_config(cfg, seed=3, device="cpu")
    before = p.predict(FRAME, "lift the cup with the left arm", steps=2)
    add_text_pooling(p.unet)
    assert p.unet.config.addition_embed_type == "text"
    assert np.array_equal(p.predict(FRAME, "lift the cup with the left arm", steps=2), before)  # zero scale: no change
    assert add_text_pooling(p.unet) is p.unet  # a model that has it keeps it
    with torch.no_grad():
        p.unet.add_embedding.norm2.weight.fill_(1.0)
    grown = p.predict(FRAME, "lift the cup with the left arm", steps=2)
    assert not np.array_equal(grown, before)
    p.save_pretrained(tmp_path / "m")
    q = FramePredictor.from_pretrained(tmp_path / "m", device="cpu")
    assert q.unet.config.addition_embed_type == "text" and same_weights(p.unet, q.unet)
    assert np.array_equal(q.predict(FRAME, "lift the cup with the left arm", steps=2), grown)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**cfg.unet)
    with pytest.raises(ModelError, match="heads do not divide"):
        add_text_pooling(unet, num_heads=7)


def test_full_resolution_attention_starts_as_the_old_model_and_round_trips(tmp_path):
    cfg = PredictorConfig.preset("tiny")  # the embedded layout: no attention at the 16^2 level
    cfg.resolution = 64
    p = FramePredictor.from_config(cfg.validate(), seed=3, device="cpu")
    assert p.unet.config.down_block_types[0] == "DownBlock2D"
    text = "hand the block over, starting with the right arm"
    before = p.predict(FRAME, text, steps=2)
    old = p.unet
    p.unet = add_full_resolution_attention(old)
    assert p.unet.config.down_block_types[0] == "CrossAttnDownBlock2D"
    assert p.unet.config.up_block_types[-1] == "CrossAttnUpBlock2D"
    assert np.array_equal(p.predict(FRAME, text, steps=2), before)  # zero output projections: no change yet
    assert add_full_resolution_attention(p.unet) is p.unet  # a model that has it keeps it
    with torch.no_grad():
        p.unet.down_blocks[0].attentions[0].proj_out.weight.normal_(0, 0.5)
    grown = p.predict(FRAME, text, steps=2)
    assert not np.array_equal(grown, before)
    assert not np.array_equal(p.predict(FRAME, "hand the block over, starting with the left arm", steps=2), grown)
    p.save_pretrained(tmp_path / "m")
    q = FramePredictor.from_pretrained(tmp_path / "m", device="cpu")
    assert same_weights(p.unet, q.unet) and np.array_equal(q.predict(FRAME, text, steps=2), grown)
    from diffusers import UNet2DConditionModel

    odd = UNet2DConditionModel(**{**cfg.unet, "down_block_types": ["CrossAttnDownBlock2D"] * 3})
    with pytest.raises(ModelError, match="top level"):
        add_full_resolution_attention(odd)


def test_single_file_equals_folder_load(pred, cfg, tmp_path):
    pred.save_pretrained(tmp_path / "folder")
    save_file(to_ldm_checkpoint(pred.unet, pred.vae, pred.text_encoder.model), str(tmp_path / "sd1.safetensors"))
    folder = FramePredictor.from_pretrained(tmp_path / "folder", device="cpu")
    single = FramePredictor.from_pretrained(tmp_path / "sd1.safetensors", device="cpu", config=cfg)
    for a, b in ((folder.unet, single.unet), (folder.vae, single.vae),
                 (folder.text_encoder.model, single.text_encoder.model)):
        assert same_weights(a, b)
    assert np.array_equal(folder.predict(FRAME, "lift the cup", steps=2), single.predict(FRAME, "lift the cup", steps=2))
    assert "single file" in single.describe()


def test_single_file_sd1_text_to_image_is_widened(cfg, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**cfg.unet, "in_channels": 4})
    vae, te = AutoencoderKL(**cfg.vae), CLIPTextModel(CLIPTextConfig(**cfg.text_encoder_config))
    torch.save({"state_dict": to_ldm_checkpoint(unet, vae, te)}, tmp_path / "v1-tiny.ckpt")  # .ckpt layout
    p = FramePredictor.from_pretrained(tmp_path / "v1-tiny.ckpt", device="cpu", config=cfg)
    w = p.unet.conv_in.weight
    assert w.shape[1] == 8 and torch.equal(w[:, :4], unet.conv_in.weight) and torch.count_nonzero(w[:, 4:]) == 0
    assert p.predict(FRAME, "open the drawer", steps=1).shape == (64, 64, 3)


def _ip2p_pipeline(pred):
    """diffusers' own InstructPix2Pix pipeline around the same components (Euler-ancestral, like the paper)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=pred.vae, text_encoder=pred.text_encoder.model, tokenizer=pred.text_encoder.tokenizer, unet=pred.unet,
        scheduler=EulerAncestralDiscreteScheduler.from_config(dict(pred.scheduler.config)), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    return pipe


def test_diffusers_instructpix2pix_folder(pred, tmp_path):
    pipe = _ip2p_pipeline(pred)
    pipe.save_pretrained(tmp_path / "ip2p")
    assert (tmp_path / "ip2p" / "model_index.json").is_file()
    p = FramePredictor.from_pretrained(tmp_path / "ip2p", device="cpu")
    assert same_weights(p.unet, pred.unet) and same_weights(p.text_encoder.model, pred.text_encoder.model)
    assert p.config.name == "diffusers" and "diffusers folder" in p.describe()
    # without a tokenizer folder the CLIP tokenizer is built from the shipped BPE vocabulary
    import shutil

    shutil.rmtree(tmp_path / "ip2p" / "tokenizer")
    q = FramePredictor.from_pretrained(tmp_path / "ip2p", device="cpu")
    assert q.text_encoder.tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_paper_sampling_matches_diffusers_pipeline(pred):
    """Our Euler-ancestral dual-CFG loop reproduces diffusers' InstructPix2Pix pipeline (same seed/weights)."""
    from PIL import Image

    from frameplan_core.image import fit

    pipe = _ip2p_pipeline(pred)
    pipe.set_progress_bar_config(disable=True)
    src = fit(FRAME, 64)
    ref = pipe(prompt="stack the blocks", image=Image.fromarray(src), num_inference_steps=6, guidance_scale=7.5,
               image_guidance_scale=1.5, generator=torch.Generator().manual_seed(4), output_type="np").images[0]
    ref = (np.clip(ref, 0, 1) * 255).round().astype(np.uint8)
    ours = pred.predict(src, "stack the blocks", steps=6, sampler="euler_a", text_scale=7.5, image_scale=1.5, seed=4)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 2


def test_bad_checkpoints(pred, cfg, tmp_path):
    with pytest.raises(ModelError, match="no such checkpoint"):
        FramePredictor.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a predictor checkpoint"):
        FramePredictor.from_pretrained(tmp_path / "empty")
    pred.save_pretrained(tmp_path / "wrong")  # wrong architecture: a 3-channel UNet
    conf = json.loads((tmp_path / "wrong" / "unet" / "config.json").read_text())
    (tmp_path / "wrong" / "unet" / "config.json").write_text(json.dumps({**conf, "in_channels": 3}))
    with pytest.raises(ModelError, match="in/out channels"):
        FramePredictor.from_pretrained(tmp_path / "wrong")
    (tmp_path / "wrong" / "unet" / "config.json").write_text(json.dumps({**conf, "block_out_channels": [64, 64, 128, 128]}))
    with pytest.raises(ModelError, match="unet/vae weights"):
        FramePredictor.from_pretrained(tmp_path / "wrong")
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tmp_path / "bert.safetensors"))
    with pytest.raises(ModelError, match="not a Stable Diffusion 1.x"):
        FramePredictor.from_pretrained(tmp_path / "bert.safetensors", config=cfg)
    save_file({"cond_stage_model.model.ln_final.weight": torch.zeros(2)}, str(tmp_path / "sd2.safetensors"))
    with pytest.raises(ModelError, match="SD 2.x"):
        FramePredictor.from_pretrained(tmp_path / "sd2.safetensors", config=cfg)
    sd = to_ldm_checkpoint(pred.unet, pred.vae, pred.text_encoder.model)
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    with pytest.raises(ModelError, match="conv_in has shape"):  # a tiny file is not the sd15 architecture
        FramePredictor.from_pretrained(tmp_path / "tiny.safetensors")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        FramePredictor.from_pretrained(tmp_path / "junk.ckpt", config=cfg)
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown checkpoint file type"):
        FramePredictor.from_pretrained(tmp_path / "model.onnx")


def test_clip_folder_without_text_encoder_is_refused(pred, tmp_path):
    """Our folder of a CLIP model whose text_encoder/ is missing must not load a random CLIP silently."""
    import shutil

    pred.save_pretrained(tmp_path / "m")
    shutil.rmtree(tmp_path / "m" / "text_encoder")
    with pytest.raises(ModelError, match="text_encoder"):
        FramePredictor.from_pretrained(tmp_path / "m", device="cpu")


def test_folder_with_a_vae_that_does_not_fit_the_unet_is_refused(pred, tmp_path):
    """frameplan.json is checked, but so must be the vae/ actually loaded (16 latent channels vs an 8/4 UNet)."""
    from frameplan_core.vae import build_vae, tiny_vae_config

    pred.save_pretrained(tmp_path / "m")
    build_vae({**tiny_vae_config(), "latent_channels": 16}, seed=0).save_pretrained(tmp_path / "m" / "vae")
    with pytest.raises(ModelError, match="do not fit together.*in_channels"):
        FramePredictor.from_pretrained(tmp_path / "m", device="cpu")


def test_single_file_suffix_case_does_not_matter(pred, cfg, tmp_path):
    save_file(to_ldm_checkpoint(pred.unet, pred.vae, pred.text_encoder.model), str(tmp_path / "SD1.SAFETENSORS"))
    p = FramePredictor.from_pretrained(tmp_path / "SD1.SAFETENSORS", device="cpu", config=cfg)
    assert same_weights(p.unet, pred.unet)

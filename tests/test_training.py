"""Training machinery on tiny generated data (CPU, Lightning): config handling, resumable data order, the
predictor/planner/VAE modules, loss decrease, exact resume, bad samples, export."""
import json
import logging
import warnings

import numpy as np
import pytest
import torch
from frameplan_training import run
from frameplan_training.config import load_train_config
from frameplan_training.synthetic import write_grid, write_ip2p
from oracles import ZeroChangeOracle

from frameplan_core.errors import ConfigError, DataError

warnings.filterwarnings("ignore", module="lightning")
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")

TINY = ["image_size=40", "crop_res=32", "batch_size=4", "accelerator=cpu", "val_every_n_epochs=0",
        "sample_every_n_steps=0", "log_every_n_steps=1", "checkpoint_every_n_steps=1000"]
QUIET = {"enable_progress_bar": False}


@pytest.fixture(scope="module")
def ip2p(tmp_path_factory):
    return write_ip2p(tmp_path_factory.mktemp("data") / "ip2p")


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    return write_grid(tmp_path_factory.mktemp("data") / "grid")


# ---------------------------------------------------------------- config
def test_config_yaml_unknown_keys_overrides(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("lr: 1e-4\nbatch_size: 2\nwarmup_stepz: 5\n")
    with pytest.raises(ConfigError, match=r"warmup_stepz"):
        load_train_config("predictor", p)
    p.write_text("lr: 1e-4\nbatch_size: 2\n")
    cfg = load_train_config("predictor", p, ["max_steps=7", "lr=3e-4", "devices=auto"])
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.devices) == (3e-4, 2, 7, "auto")
    with pytest.raises(ConfigError, match="lrr"):
        load_train_config("predictor", p, ["lrr=1"])
    with pytest.raises(ConfigError, match="drop_both_prob|conditioning dropout"):
        load_train_config("predictor", p, ["drop_text_prob=0.6", "drop_image_prob=0.6"])
    with pytest.raises(ConfigError, match="crop_res"):
        load_train_config("vae", None, ["image_size=32", "crop_res=64"])
    with pytest.raises(ConfigError, match="unknown model family"):
        load_train_config("gan", None)
    # wall-clock budget: Lightning's DD:HH:MM:SS string, checked before any training starts
    assert load_train_config("planner", None, ["max_time=00:01:30:00"]).max_time == "00:01:30:00"
    with pytest.raises(ConfigError, match="max_time.*DD:HH:MM:SS"):
        load_train_config("predictor", None, ["max_time=90m"])
    for kind in ("predictor", "planner", "vae"):  # the shipped configs load
        load_train_config(kind, f"config/train_{kind}.yaml")


def test_set_overrides_parse_numbers_as_yaml_1_2_and_keep_strings_as_typed():
    # PyYAML's YAML 1.1 read these as base-60 / octal integers
    assert load_train_config("planner", None, ["max_time=10:00:00:00"]).max_time == "10:00:00:00"
    assert load_train_config("planner", None, ["seed=010"]).seed == 10
    cfg = load_train_config("planner", None, ["adapter_name=123", "model=1.0", "lr=1e-4", "devices=8",
                                              "deterministic=true", "vae_from=null", "lora_alpha=2"])
    assert (cfg.adapter_name, cfg.model, cfg.lr, cfg.devices) == ("123", "1.0", 1e-4, 8)
    assert cfg.deterministic is True and cfg.vae_from is None and cfg.lora_alpha == 2.0
    with pytest.raises(ConfigError, match="seed.*integer"):
        load_train_config("planner", None, ["seed=1.5"])
    with pytest.raises(ConfigError, match="deterministic.*true/false"):
        load_train_config("planner", None, ["deterministic=1"])


def test_config_ranges_flip_prob_and_lora_alpha():
    assert load_train_config("predictor", None, ["flip_prob=1"]).flip_prob == 1.0
    with pytest.raises(ConfigError, match="flip_prob"):
        load_train_config("predictor", None, ["flip_prob=1.5"])
    with pytest.raises(ConfigError, match="lora_alpha"):
        load_train_config("planner", None, ["lora_alpha=0"])


def test_resume_refuses_a_changed_lora_setup(tmp_path):
    import dataclasses

    cfg = load_train_config("planner", None, ["lora_rank=4", "lora_alpha=4"])
    ckpt = tmp_path / "step=0000001.ckpt"
    torch.save({"frameplan_config": dataclasses.asdict(cfg)}, ckpt)
    run.check_resume(cfg, ckpt)
    for change in ("lora_alpha=1", "lora_rank=8", "train_base=true", "adapter_name=other"):
        with pytest.raises(ConfigError, match=change.split("=")[0]):  # alpha would silently rescale the adapter
            run.check_resume(load_train_config("planner", None, ["lora_rank=4", "lora_alpha=4", change]), ckpt)


def test_continuing_a_saved_adapter_refuses_a_different_rank_or_alpha(tmp_path):
    from frameplan_training.planner_module import PlannerModule, load_planner

    from frameplan_core.planner import GridPlanner, PlannerConfig

    pl = GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32), seed=0)
    pl.add_adapter("default", 4, 2.0)
    pl.save_pretrained(tmp_path / "m")
    base = [f"model={tmp_path / 'm'}", "crop_res=32"]
    for change, name in (("lora_rank=8", "lora_rank=8"), ("lora_alpha=4", "lora_alpha=4")):
        cfg = load_train_config("planner", None, base + [change])
        with pytest.raises(ConfigError, match=f"{name}.*has"):
            PlannerModule(cfg, load_planner(cfg))
    cfg = load_train_config("planner", None, base + ["lora_rank=4", "lora_alpha=2"])  # the adapter's own: fine
    m = PlannerModule(cfg, load_planner(cfg))
    assert m.transformer.peft_config["default"].r == 4 and m.trainable_named_parameters()


def test_export_to_an_existing_file_is_a_clear_error(tmp_path):
    from frameplan_cli.main import main

    (tmp_path / "taken").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        run.export_checkpoint("predictor", tmp_path / "none.ckpt", tmp_path / "taken")
    assert main(["export", "planner", "--checkpoint", str(tmp_path / "none.ckpt"), "--out",
                 str(tmp_path / "taken")]) == 1


def test_fp16_export_keeps_the_lora_metadata(tmp_path):
    from safetensors import safe_open

    from frameplan_core.planner import GridPlanner, PlannerConfig
    from frameplan_training.export import to_fp16_where_safe

    pl = GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32, lora_rank=4, lora_alpha=1.0), seed=0)
    pl.add_adapter("a")
    with torch.no_grad():
        for p in pl.trainable_parameters("lora"):
            p.add_(0.01)
    pl.save_adapter(tmp_path / "a", "a")
    counts = to_fp16_where_safe(tmp_path)
    assert counts["fp16"] > 0
    with safe_open(str(tmp_path / "a" / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert "lora_adapter_metadata" in (f.metadata() or {})
    pl.load_adapter(tmp_path / "a", "b")  # alpha 1 with rank 4 comes back, not the default alpha = rank
    assert pl.transformer.peft_config["b"].lora_alpha == 1.0


def test_lr_cooldown_falls_linearly_to_zero_at_max_steps(ip2p, tmp_path):
    import csv

    from frameplan_training.base_module import warmup_constant

    f = warmup_constant(10, 100, 1000)
    assert [f(s) for s in (0, 9, 500, 900, 950, 999, 1000)] == [0.1, 1.0, 1.0, 1.0, 0.5, 0.01, 0.0]
    assert warmup_constant(10)(10**6) == 1.0  # no cooldown: constant to the end (IP2P)
    with pytest.raises(ConfigError, match="lr_decay_steps.*max_steps"):
        load_train_config("predictor", None, ["lr_decay_steps=100"])  # max_steps -1: no end to decay towards
    with pytest.raises(ConfigError, match="lr_decay_steps"):
        load_train_config("predictor", None, ["max_steps=50", "lr_decay_steps=-1"])
    # the schedule the optimizer really used, from the run's own CSV log
    cfg = load_train_config("predictor", None, TINY + ["max_steps=4", "lr=1e-3", "warmup_steps=1",
                                                       "lr_decay_steps=2", "ema_decay=0"])
    res = run.train("predictor", cfg, ip2p, tmp_path / "cool", export=False, **QUIET)
    rows = list(csv.DictReader(open(tmp_path / "cool" / "logs" / "metrics.csv")))
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])
    assert res.module.trainer.optimizers[0].param_groups[0]["lr"] == 0.0


# ---------------------------------------------------------------- data order
def test_epoch_limit_warning_names_the_step_where_training_stops():
    cfg = load_train_config("planner", None, ["batch_size=8", "max_epochs=400", "max_steps=20000"])
    msg = run.epoch_limit_warning(cfg, 101, 1)  # 101 grids -> 13 steps per epoch
    assert msg and "13 optimizer steps per epoch" in msg and "5200 steps < max_steps=20000" in msg
    assert "7 optimizer steps" in (run.epoch_limit_warning(cfg, 101, 2) or "")
    assert run.epoch_limit_warning(cfg, 1000, 1) is None  # 125 x 400 steps >= 20000
    cfg = load_train_config("planner", None, ["batch_size=8", "max_epochs=400", "max_steps=0"])
    assert run.epoch_limit_warning(cfg, 101, 1) is None  # no step limit: epochs are the limit by choice


def test_resumable_loader_continues_the_same_order():
    from frameplan_training.sampler import ResumableLoader, ResumableSampler

    data = list(range(10))

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, key):
            return torch.tensor(key)  # (index, augmentation seed)

    def loader(epoch=0):
        s = ResumableSampler(len(data), seed=3)
        s.set_epoch(epoch)
        return ResumableLoader(DS(), s, batch_size=3)

    full = [b for b in loader(1)]
    assert sorted(int(i) for b in full for i in b[:, 0]) == data  # a permutation of the epoch
    assert [b.tolist() for b in loader(1)] == [b.tolist() for b in full]  # deterministic, seeds included
    assert [b.tolist() for b in loader(2)] != [b.tolist() for b in full]  # another epoch, another order
    resumed = loader(0)
    resumed.load_state_dict({"epoch": 1, "batches_done": 2})
    assert [b.tolist() for b in resumed] == [b.tolist() for b in full[2:]]
    at_end = loader(0)
    at_end.load_state_dict({"epoch": 1, "batches_done": len(full)})  # saved on the last batch of epoch 1
    assert [b.tolist() for b in at_end] == [b.tolist() for b in loader(2)]
    sharded = [[int(i) for b in ResumableLoader(DS(), ResumableSampler(10, 3, rank=r, world_size=3), 2)
                for i in b[:, 0]] for r in range(3)]
    assert len({len(s) for s in sharded}) == 1 and set().union(*sharded) == set(data)


def test_resume_on_changed_data_warns_that_the_order_differs(caplog):
    from frameplan_training.sampler import ResumableLoader, ResumableSampler

    ds = torch.utils.data.TensorDataset(torch.arange(10))
    same = ResumableLoader(ds, ResumableSampler(10, seed=3), batch_size=3)
    with caplog.at_level("WARNING", logger="frameplan_training.sampler"):
        same.load_state_dict(same.state_dict())
        assert not caplog.records
        grown = ResumableLoader(ds, ResumableSampler(10, seed=3), batch_size=3)
        grown.load_state_dict({"epoch": 1, "batches_done": 2, "seed": 3, "n": 8})  # saved with 8 samples
    assert "8 train samples" in caplog.text and "not in the uninterrupted run's order" in caplog.text


# ---------------------------------------------------------------- predictor
def test_motion_weights_upweight_the_changed_cell():
    from frameplan_training.predictor_module import motion_weights

    a = torch.zeros(1, 3, 32, 32) - 0.5
    b = a.clone()
    b[:, :, 8:16, 16:24] = 0.9  # object appears in latent cell (1, 2) of a 4x4 latent
    w = motion_weights(a, b, (4, 4), lam=2.0, threshold=25)
    assert w.shape == (1, 1, 4, 4)
    assert w[0, 0, 1, 2] == pytest.approx(3.0)
    assert w[0, 0, 3, 0] == pytest.approx(1.0)  # far away: weight 1
    assert w[0, 0, 0, 1] > 1.0  # dilated by one latent cell


def _eval_loss(module, batches, draws=2):
    module.eval()
    vals = []
    with torch.no_grad():
        for k, b in enumerate(batches):
            for d in range(draws):
                vals.append(float(module.compute_loss(b, module.generator("val", 100 + k, d), train=False)[0]))
    return float(np.mean(vals))


def test_predictor_training_lowers_loss_and_exports(ip2p, tmp_path, caplog):
    from frameplan_training.datasets import PairDataset

    from frameplan_core.predictor import FramePredictor

    cfg = load_train_config("predictor", None, TINY + ["max_steps=12", "lr=3e-3", "warmup_steps=1", "ema_decay=0.9",
                                                     "motion_loss_weight=2",
                                                     "sample_every_n_steps=12", "num_sample_images=2",
                                                     "sample_steps=2", "crop_min_scale=1.0", "color_jitter=0"])
    module = run.build_module("predictor", cfg)
    ds = PairDataset(ip2p, "train", 40, 32)
    batches = [torch.utils.data.default_collate([ds[i] for i in range(k, k + 4)]) for k in (0, 4, 8)]
    before = _eval_loss(module, batches)
    with caplog.at_level(logging.INFO):
        res = run.train("predictor", cfg, ip2p, tmp_path / "run", **QUIET)
    trained = res.module
    with trained.ema_applied():
        after_ema = _eval_loss(trained, batches)
    after = _eval_loss(trained, batches)
    assert res.global_step == 12
    assert after < 0.9 * before, (before, after)
    assert after_ema < before
    assert res.samples and res.samples[-1].is_file()
    # the export is the core model: it loads with FramePredictor and predicts at the trained resolution
    p = FramePredictor.from_pretrained(res.model_dir, device="cpu")
    assert p.config.resolution == 32
    out = p.predict(np.zeros((48, 64, 3), np.uint8), "beat the block with the hammer", steps=2)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    # exported weights equal the EMA weights (fp16 storage where safe)
    with trained.ema_applied():
        w = trained.unet.conv_in.weight.detach().clone()
    assert torch.allclose(p.unet.conv_in.weight, w, atol=2e-3)
    # where it trained (the module itself is back on the CPU after Lightning's teardown on any device)
    assert res.device == "cpu" and json.loads((tmp_path / "run" / "train_summary.json").read_text())["device"] == "cpu"
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file()


def test_mirror_flips_the_pair_and_exchanges_the_side_words(ip2p):
    """mirror_prob: a mirrored training pair is the plain one flipped left to right, with left and right
    exchanged in its instruction; validation items (no seed) are never mirrored; flip and mirror exclude each other."""
    from frameplan_training.datasets import PairDataset

    plain = PairDataset(ip2p, "train", 40, 32, jitter=0.0)
    mirror = PairDataset(ip2p, "train", 40, 32, jitter=0.0, mirror_prob=1.0,
                         instruction_override={i: "hand it over, starting with the left arm" for i in range(99)})
    a, m = plain[(0, 5)], mirror[(0, 5)]
    assert torch.equal(m["input"], a["input"].flip(-1)) and torch.equal(m["target"], a["target"].flip(-1))
    assert m["text"] == "hand it over, starting with the right arm"
    v = mirror[0]
    assert torch.equal(v["input"], plain[0]["input"]) and v["text"].endswith("the left arm")
    half = PairDataset(ip2p, "train", 40, 32, mirror_prob=0.5)
    assert 0 < sum(half[(0, s)]["input"].ne(plain[(0, s)]["input"]).any().item() for s in range(40)) < 40
    with pytest.raises(ConfigError, match="mirror_prob"):
        load_train_config("predictor", None, ["mirror_prob=1.5"])
    with pytest.raises(ConfigError, match="use one"):
        load_train_config("predictor", None, ["mirror_prob=0.5", "flip_prob=0.5"])


def test_text_pooling_option_adds_a_trainable_pathway(ip2p):
    from frameplan_training.datasets import PairDataset

    module = run.build_module("predictor", load_train_config("predictor", None, TINY + ["text_pooling=true"]))
    names = [n for n, _ in module.trainable_named_parameters()]
    assert module.unet.config.addition_embed_type == "text" and "unet.add_embedding.norm2.weight" in names
    ds = PairDataset(ip2p, "train", 40, 32)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    loss, _ = module.compute_loss(batch, torch.Generator().manual_seed(0), train=True)
    loss.backward()
    grad = module.unet.add_embedding.norm2.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # starts at zero, but learns
    plain = run.build_module("predictor", load_train_config("predictor", None, TINY))
    assert plain.unet.config.addition_embed_type is None


def test_v_loss_weighting_values_high_noise_errors(ip2p):
    """loss_weighting=v: each sample's eps error weighs min(1/alpha_bar_t, cap) over the mean weight, so an error
    at high noise (where the layout is decided) costs more than one at low noise; eps keeps the plain loss."""
    from frameplan_training.datasets import PairDataset
    from frameplan_training.predictor_module import timestep_weights

    module = run.build_module("predictor", load_train_config("predictor", None, TINY))
    ab = module.predictor.scheduler.alphas_cumprod
    w = timestep_weights(ab, 20.0)
    assert abs(float(w.mean()) - 1.0) < 1e-5 and torch.all(w[1:] >= w[:-1])
    assert float(w[-1] / w[0]) == pytest.approx(20.0 * float(ab[0]), rel=1e-4)  # capped: 20 / (1 / ab_0)
    ds = PairDataset(ip2p, "train", 40, 32, jitter=0.0)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    with torch.no_grad():
        plain, _ = module.compute_loss(batch, module.generator("val", 0, 0), train=False)
    weighted_module = run.build_module("predictor", load_train_config("predictor", None, TINY + [
        "loss_weighting=v", "loss_weight_cap=20"]))
    weighted_module.unet.load_state_dict(module.unet.state_dict())
    # the weights are computed once per module and are no part of a checkpoint
    assert module.loss_t_weights is None and torch.equal(weighted_module.loss_t_weights, w)
    assert not any("loss_t_weights" in k for k in weighted_module.state_dict())
    from diffusers import DDPMScheduler
    from frameplan_training.predictor_module import PredictorModule

    v_cfg = load_train_config("predictor", None, TINY + ["loss_weighting=v"])
    with pytest.raises(ConfigError, match="predicts v already"):
        PredictorModule._loss_t_weights(v_cfg, DDPMScheduler(prediction_type="v_prediction"))
    with torch.no_grad():
        weighted, logs = weighted_module.compute_loss(batch, module.generator("val", 0, 0), train=False)
    assert float(logs["mse"]) == pytest.approx(float(plain), rel=1e-5)  # same draws, same raw error
    assert float(weighted) != pytest.approx(float(plain), rel=1e-3)
    with pytest.raises(ConfigError, match="loss_weight_cap"):
        load_train_config("predictor", None, ["loss_weighting=v", "loss_weight_cap=0.5"])
    with pytest.raises(ConfigError, match="loss_weighting"):
        load_train_config("predictor", None, ["loss_weighting=x0"])


def test_text_noise_conditioning_augmentation(ip2p):
    """text_noise: each sample's token states get noise of that many times their RMS, padding stays zero (as at
    inference), the draws come from the sample's generator; training losses see it, validation losses do not."""
    from frameplan_training.datasets import PairDataset
    from frameplan_training.predictor_module import noisy_text

    module = run.build_module("predictor", load_train_config("predictor", None, TINY))
    text = module.text_embeddings(["pick up the hammer and beat the block", "stack the blocks"])
    pad = ~(text != 0).any(dim=-1)
    assert pad.any() and (~pad).any()
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = noisy_text(text, 0.5, gens)
    assert torch.equal(out[pad], text[pad])  # padding untouched
    for i in range(2):
        tok = ~pad[i]
        rms = text[i][tok].pow(2).mean().sqrt()
        rel = (out[i][tok] - text[i][tok]).pow(2).mean().sqrt() / rms
        assert 0.45 < float(rel) < 0.55
    again = noisy_text(text, 0.5, [torch.Generator().manual_seed(i) for i in range(2)])
    assert torch.equal(out, again)
    ds = PairDataset(ip2p, "train", 40, 32, jitter=0.0)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    noisy_module = run.build_module("predictor", load_train_config("predictor", None, TINY + ["text_noise=0.5"]))
    noisy_module.unet.load_state_dict(module.unet.state_dict())
    with torch.no_grad():
        plain, _ = module.compute_loss(batch, module.generator("train", 0, 0), train=True)
        plain_val, _ = module.compute_loss(batch, module.generator("val", 0, 0), train=False)
        noisy, _ = noisy_module.compute_loss(batch, module.generator("train", 0, 0), train=True)
        noisy_val, _ = noisy_module.compute_loss(batch, module.generator("val", 0, 0), train=False)
    assert float(noisy) != pytest.approx(float(plain), rel=1e-4)  # training sees the noise ...
    assert float(noisy_val) == pytest.approx(float(plain_val), rel=1e-6)  # ... validation does not
    with pytest.raises(ConfigError, match="text_noise"):
        load_train_config("predictor", None, ["text_noise=-1"])


def test_high_noise_timestep_draws():
    """high_noise_prob: that share of training timesteps comes from [high_noise_min_t, T); 0 keeps the plain draws."""
    from frameplan_training.predictor_module import draw_timestep

    g, h = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [int(draw_timestep(g, 1000, 0.0, 800)) for _ in range(50)] == \
        [int(torch.randint(0, 1000, (1,), generator=h)) for _ in range(50)]
    g = torch.Generator().manual_seed(0)
    ts = np.array([int(draw_timestep(g, 1000, 0.5, 800)) for _ in range(4000)])
    assert ts.min() >= 0 and ts.max() < 1000
    assert 0.55 < (ts >= 800).mean() < 0.65  # 0.5 + 0.5 x 0.2
    assert all(int(draw_timestep(g, 1000, 1.0, 800)) >= 800 for _ in range(200))
    with pytest.raises(ConfigError, match="high_noise_min_t=1000: must be below the 1000"):
        run.build_module("predictor", load_train_config("predictor", None, TINY + [
            "high_noise_prob=0.5", "high_noise_min_t=1000"]))
    with pytest.raises(ConfigError, match="high_noise_prob"):
        load_train_config("predictor", None, ["high_noise_prob=2"])


def test_predictor_module_uses_the_models_text_cache():
    """One text cache: the trainer's embeddings come from the FramePredictor's (normalised, each text alone)."""
    module = run.build_module("predictor", load_train_config("predictor", None, TINY))
    p = module.predictor
    p.text_cache.clear()
    emb = module.text_embeddings(["lift  the lid", "", "lift the lid"])
    assert emb.dtype == torch.float32 and len(p.text_cache) == 2 and p.text_cache.size >= 4096
    assert torch.equal(emb[0], emb[2]) and not hasattr(module, "_text_cache")
    assert torch.equal(emb[:2], p.text_encoder.encode(["lift the lid", ""]).float())


def test_residual_target_fine_tune(ip2p, tmp_path):
    """target=residual on a saved frame-target model: the loss is taken on the change from the input (tested with
    the exact denoiser of "nothing changes"), the run exports a residual model and refuses a resume that flips it."""
    from frameplan_core.predictor import FramePredictor
    from frameplan_training.datasets import PairDataset

    base = TINY + ["model=frameplan_core/weights/predictor-tiny", "warmup_steps=1", "ema_decay=0",
                   "crop_min_scale=1.0", "color_jitter=0"]
    module = run.build_module("predictor", load_train_config("predictor", None, base + ["target=residual"]))
    assert module.predictor.config.target == "residual"
    ds = PairDataset(ip2p, "train", 40, 32)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    batch["target"] = batch["input"].clone()  # an unchanged scene
    module.unet = ZeroChangeOracle(module.predictor.scheduler.alphas_cumprod, 4)
    resid = float(module.compute_loss(batch, torch.Generator().manual_seed(0), train=False)[0])
    module.predictor.config.target = "frame"
    frame = float(module.compute_loss(batch, torch.Generator().manual_seed(0), train=False)[0])
    assert resid < 0.2 * frame, (resid, frame)
    cfg = load_train_config("predictor", None, base + ["target=residual", "max_steps=2", "checkpoint_every_n_steps=1"])
    res = run.train("predictor", cfg, ip2p, tmp_path / "r", **QUIET)
    assert FramePredictor.from_pretrained(res.model_dir, device="cpu").config.target == "residual"
    with pytest.raises(ConfigError, match="target"):
        run.train("predictor", load_train_config("predictor", None, base + ["target=frame", "max_steps=3"]), ip2p,
                  tmp_path / "bad", resume=res.checkpoints[0], export=False, **QUIET)


@pytest.mark.parametrize("condition,target", [("tiled", "grid"), ("channel", "residual")])
def test_planner_condition_fine_tune(grids, tmp_path, condition, target):
    """condition=tiled/channel (and target=residual) on a saved first-cell planner: the run trains (for
    channel: the widened input too), exports a planner that loads with them, resumes, and refuses a resume that
    changes either."""
    from frameplan_core.planner import GridPlanner, PlannerConfig

    seed_layout = GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32), seed=0)
    seed_layout.save_pretrained(tmp_path / "base")  # the seed's layout (first_cell, grid target)
    base = TINY + [f"model={tmp_path / 'base'}", "train_base=true", "batch_size=2", "warmup_steps=1"]
    same = [f"condition={condition}", f"target={target}"]
    cfg = load_train_config("planner", None, base + same + ["max_steps=2", "checkpoint_every_n_steps=1"])
    res = run.train("planner", cfg, grids, tmp_path / "r", **QUIET)
    g = GridPlanner.from_pretrained(res.model_dir, device="cpu")
    assert (g.config.condition, g.config.target, g.config.cell_size) == (condition, target, 32)
    if condition == "channel":
        w = res.module.transformer.x_embedder.weight
        assert w.shape[1] == 32 and w[:, 16:].abs().sum() > 0  # the condition's weights trained from zero
    more = load_train_config("planner", None, base + same + ["max_steps=3"])
    assert run.train("planner", more, grids, tmp_path / "r2", resume=res.checkpoints[0], export=False,
                     **QUIET).global_step == 3
    other = "grid" if target == "residual" else "residual"
    for changed, field in ((["condition=first_cell", "target=grid"], "condition"),
                           ([f"condition={condition}", f"target={other}"], "target")):
        with pytest.raises(ConfigError, match=field):
            run.train("planner", load_train_config("planner", None, base + changed + ["max_steps=3"]),
                      grids, tmp_path / "bad", resume=res.checkpoints[0], export=False, **QUIET)
    with pytest.raises(ConfigError, match="condition"):
        load_train_config("planner", None, base + ["condition=everywhere"])
    with pytest.raises(ConfigError, match="train_base"):  # LoRA would keep the widened input at zero
        run.build_module("planner", load_train_config("planner", None, TINY + [f"model={tmp_path / 'base'}",
                                                                                "condition=channel"]))


def _state(module):
    s = {k: v.clone() for k, v in module.named_trainable_state()}
    s.update({f"ema.{k}": v for k, v in module.ema.state_dict()["shadows"].items()})
    return s


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run_exactly(ip2p, tmp_path):
    # 12 train samples, batch 4 -> 3 batches per epoch: step 2 is mid-epoch, step 3 ends epoch 0
    base = TINY + ["crop_min_scale=0.8", "color_jitter=0.1", "warmup_steps=2", "ema_decay=0.9", "lr=1e-3",
                   "deterministic=true", "keep_checkpoints=5"]
    kw = dict(export=False, **QUIET)
    full = run.train("predictor", load_train_config("predictor", None, base + ["max_steps=4"]), ip2p,
                     tmp_path / "full", **kw)
    part = run.train("predictor", load_train_config("predictor", None, base + ["max_steps=3",
                                                                               "checkpoint_every_n_steps=1"]),
                     ip2p, tmp_path / "part", **kw)
    assert [c.name for c in part.checkpoints] == ["step=0000001.ckpt", "step=0000002.ckpt", "step=0000003.ckpt"]
    ref = _state(full.module)
    for ckpt in part.checkpoints[1:]:
        res = run.train("predictor", load_train_config("predictor", None, base + ["max_steps=4"]), ip2p,
                        tmp_path / f"resumed_{ckpt.stem}", resume=ckpt, **kw)
        assert res.global_step == 4
        got = _state(res.module)
        assert got.keys() == ref.keys()
        differing = [k for k in ref if not torch.equal(ref[k], got[k])]
        assert not differing, f"resume from {ckpt.name}: {len(differing)} tensors differ, e.g. {differing[:3]}"
    # a changed model-defining field is refused on resume
    with pytest.raises(ConfigError, match="batch_size"):
        run.train("predictor", load_train_config("predictor", None, base + ["max_steps=4", "batch_size=2"]), ip2p,
                  tmp_path / "bad", resume=part.checkpoints[-1], **kw)


def test_resume_into_the_same_folder_keeps_the_earlier_logs(ip2p, tmp_path):
    import csv

    base = TINY + ["warmup_steps=1", "ema_decay=0", "checkpoint_every_n_steps=1", "keep_checkpoints=5"]
    out = tmp_path / "run"
    first = run.train("predictor", load_train_config("predictor", None, base + ["max_steps=2"]), ip2p, out,
                      export=False, **QUIET)
    steps = lambda f: [int(r["step"]) for r in csv.DictReader(open(f)) if r.get("train/loss")]  # noqa: E731
    assert steps(out / "logs" / "metrics.csv") == [0, 1]
    for resumed_max, folder in ((3, "run2"), (4, "run3")):
        run.train("predictor", load_train_config("predictor", None, base + [f"max_steps={resumed_max}"]), ip2p,
                  out, resume="auto", export=False, **QUIET)
        assert steps(out / "logs" / folder / "metrics.csv") == [resumed_max - 1]
    assert steps(out / "logs" / "metrics.csv") == [0, 1]  # Lightning would have deleted these rows
    assert first.global_step == 2


def test_export_checkpoint_gives_the_runs_model(ip2p, tmp_path, capsys):
    from frameplan_cli.main import main
    from frameplan_core.predictor import FramePredictor

    cfg = load_train_config("predictor", None, TINY + ["max_steps=3", "checkpoint_every_n_steps=3", "lr=3e-3",
                                                     "warmup_steps=1", "ema_decay=0.5"])
    res = run.train("predictor", cfg, ip2p, tmp_path / "run", **QUIET)
    ckpt = res.checkpoints[-1]
    assert ckpt.name == "step=0000003.ckpt"
    assert main(["export", "predictor", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ema")]) == 0
    assert "EMA weights" in capsys.readouterr().out
    run.export_checkpoint("predictor", ckpt, tmp_path / "raw", ema=False)
    final = FramePredictor.from_pretrained(res.model_dir, device="cpu").unet.state_dict()
    ema = FramePredictor.from_pretrained(tmp_path / "ema", device="cpu").unet.state_dict()
    raw = FramePredictor.from_pretrained(tmp_path / "raw", device="cpu").unet.state_dict()
    # the last checkpoint exported with EMA is exactly the model the run exported at its end
    assert all(torch.equal(final[k], ema[k]) for k in final)
    assert not all(torch.equal(final[k], raw[k]) for k in final)
    # bad input: named, not a traceback
    assert main(["export", "predictor", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ema")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["export", "predictor", "--checkpoint", str(ckpt), "--out", str(tmp_path / "raw"), "--raw",
                 "--overwrite"]) == 0  # replaced in place (atomically): still the raw weights
    again = FramePredictor.from_pretrained(tmp_path / "raw", device="cpu").unet.state_dict()
    assert all(torch.equal(raw[k], again[k]) for k in raw)
    capsys.readouterr()
    assert main(["export", "planner", "--checkpoint", str(ckpt), "--out", str(tmp_path / "p")]) == 1
    assert "frameplan_config of a planner run" in capsys.readouterr().err
    assert main(["export", "predictor", "--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "x")]) == 1
    assert "not found" in capsys.readouterr().err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["export", "predictor", "--checkpoint", str(junk), "--out", str(tmp_path / "y")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_bad_samples_are_reported_then_stop(ip2p, tmp_path):
    import shutil

    from frameplan_training.datasets import PairDataset

    data = tmp_path / "bad"
    shutil.copytree(ip2p, data)
    victim = min(data.glob("*/*_1.png"))
    victim.write_bytes(b"not an image")
    ds = PairDataset(data, None, 40, 32, max_bad=1)
    assert len(ds) == len(PairDataset(ip2p, None, 40, 32)) - 1
    assert str(victim) in next(iter(ds.tracker.bad.values()))
    with pytest.raises(DataError, match=str(victim.name)):
        PairDataset(data, None, 40, 32, max_bad=0)


def test_cli_train_reports_config_errors(ip2p, tmp_path, capsys):
    from frameplan_cli.main import main

    rc = main(["train", "predictor", "--data", str(ip2p), "--out", str(tmp_path / "o"), "--set", "nonsense=1"])
    assert rc == 1 and "nonsense" in capsys.readouterr().err
    rc = main(["train", "planner", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert rc == 1 and "not found" in capsys.readouterr().err


# ---------------------------------------------------------------- VAE and planner
def test_vae_then_planner_lora(ip2p, grids, tmp_path):
    from frameplan_training.datasets import GridSampleDataset

    from frameplan_core.planner import GridPlanner

    vae = run.train("vae", load_train_config("vae", None, TINY + ["max_steps=2"]), ip2p, tmp_path / "vae", **QUIET)
    assert vae.metrics["train/loss"] > 0
    from diffusers import AutoencoderKL

    scale = AutoencoderKL.from_pretrained(vae.model_dir / "vae").config.scaling_factor
    assert scale != pytest.approx(0.18215) and scale > 0  # set from the latent statistics

    # modality dropout draws all four combinations; trajectory drawn from the stored end-effector track
    ds = GridSampleDataset(grids, "train", 32, drop_text=0.3, drop_trajectory=0.3, drop_both=0.2)
    modes = [ds[(0, s)]["mode"] for s in range(40)]
    assert set(modes) == {"both", "text", "trajectory", "none"}
    item = ds[(0, modes.index("trajectory"))]
    assert item["text"] == "" and item["source"].shape == (3, 96, 96)
    plain = ds[(0, modes.index("text"))]["source"]
    assert not torch.equal(item["source"][:, :32, :32], plain[:, :32, :32])  # the path is drawn on frame 1
    assert torch.all(item["source"][:, 32:, :] == -1) and torch.all(item["source"][:, :, 32:] == -1)

    cfg = load_train_config("planner", None, TINY + ["max_steps=3", "batch_size=2", "lr=1e-3", "warmup_steps=1",
                                                     "ema_decay=0.9", f"vae_from={vae.model_dir}",
                                                     "checkpoint_every_n_steps=3"])
    res = run.train("planner", cfg, grids, tmp_path / "planner", **QUIET)
    m = res.module
    base_before = GridPlanner.from_config(m.planner.config, seed=cfg.seed, device="cpu").transformer.state_dict()
    changed_lora = [n for n, p in m.transformer.named_parameters() if ".lora_B" in n and p.abs().sum() > 0]
    assert changed_lora  # LoRA B starts at zero: it trained
    for n, p in m.transformer.named_parameters():
        if ".lora_" not in n:
            assert not p.requires_grad
            assert torch.equal(p.detach(), base_before[n.replace(".base_layer.", ".")]), n  # base frozen
    g = GridPlanner.from_pretrained(res.model_dir, device="cpu")
    assert g.adapters == ["default"] and g.config.cell_size == 32
    # its last checkpoint exports to the same model (EMA weights)
    exported = run.export_checkpoint("planner", res.checkpoints[-1], tmp_path / "exported")
    e = GridPlanner.from_pretrained(exported, device="cpu").transformer.state_dict()
    assert all(torch.equal(v, e[k]) for k, v in g.transformer.state_dict().items())
    plan = g.plan(np.zeros((48, 64, 3), np.uint8), "stack the blocks", steps=1, seed=0)
    assert len(plan.frames) == 9 and plan.frames[0].shape == (32, 32, 3)


def test_lora_in_bf16_holds_a_large_frozen_base_in_bf16(grids, tmp_path, monkeypatch):
    """precision=bf16-mixed LoRA on a FLUX-size base loads the frozen weights in bf16 (half the memory) and keeps
    the adapter in float32; tried here with the threshold lowered so that the tiny base counts as large."""
    from frameplan_training import planner_module

    from frameplan_core.planner import GridPlanner, PlannerConfig

    base = GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32), seed=0)
    base.save_pretrained(tmp_path / "base")
    n = planner_module.base_parameters(str(tmp_path / "base"))
    assert n == sum(p.numel() for p in base.transformer.parameters())  # counted from config.json alone
    args = TINY + [f"model={tmp_path / 'base'}", "precision=bf16-mixed", "max_steps=2", "batch_size=2",
                   "warmup_steps=1", "lr=1e-3", "checkpoint_every_n_steps=2", "ema_decay=0.5"]
    assert planner_module.frozen_dtype(load_train_config("planner", None, args)) == "float32"  # small: exported whole
    assert planner_module.frozen_dtype(load_train_config("planner", None, args[:-1] + ["precision=32-true"])) == \
        "float32"
    monkeypatch.setattr(planner_module, "LARGE_BASE", n - 1)
    cfg = load_train_config("planner", None, args)
    assert planner_module.frozen_dtype(cfg) == "bfloat16"
    res = run.train("planner", cfg, grids, tmp_path / "run", **QUIET)
    named = list(res.module.transformer.named_parameters())
    lora = [p for k, p in named if ".lora_" in k]
    assert lora and all(p.dtype == torch.float32 for p in lora)  # master weights and Adam states in float32
    assert all(p.dtype == torch.bfloat16 for k, p in named if ".lora_" not in k)
    assert any(p.abs().sum() > 0 for k, p in named if ".lora_B" in k)  # it trained (B starts at zero)
    c = cfg.crop_res  # sample images plan with the bf16 base and the float32 adapter outside autocast
    assert res.module.generate(np.zeros((c, c, 3), np.uint8), "stack the blocks", None).grid.shape == (3 * c, 3 * c, 3)
    # a large base is not copied: the adapter alone, which loads on the float32 base and plans
    assert not (res.model_dir / "transformer").exists()
    g = GridPlanner.from_pretrained(tmp_path / "base", device="cpu")
    g.load_adapter(res.model_dir / "adapters" / "default", "default")
    plan = g.plan(np.zeros((48, 64, 3), np.uint8), "stack the blocks", steps=1, seed=0)
    assert len(plan.frames) == 9 and np.isfinite(res.metrics["train/loss"])

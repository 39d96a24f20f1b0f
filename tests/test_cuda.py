"""CUDA code paths (skipped without a GPU; run on a GPU machine with ``pytest -m cuda``, or by
scripts/gpu_check.sh): the embedded models load in the GPU dtype (bf16) and agree with the CPU fp32 result,
dual-guidance batching works in bf16, a planner plans on the GPU in bf16, ``FramePredictor.compile`` gives the
eager result, and a bf16-mixed Lightning training step on the GPU lowers the loss and exports a CPU-loadable model."""
import warnings

import numpy as np
import pytest
import torch

from frameplan_core.metrics import psnr
from frameplan_core.planner import GridPlanner
from frameplan_core.predictor import FramePredictor

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

warnings.filterwarnings("ignore", module="lightning")


def _frame(seed: int = 0) -> np.ndarray:
    from frameplan_training.synthetic import episode_frames

    frames, _ = episode_frames("block_handover", seed, hw=(240, 320))
    return frames[0]


def test_embedded_predictor_on_cuda_matches_cpu():
    gpu = FramePredictor.from_pretrained("tiny", device="cuda")
    assert gpu.device.type == "cuda" and gpu.dtype in (torch.bfloat16, torch.float16)
    cpu = FramePredictor.from_pretrained("tiny", device="cpu")
    img, text = _frame(), "hand the block over to the right arm"
    a = gpu.predict(img, text, steps=8, seed=3)
    b = cpu.predict(img, text, steps=8, seed=3)
    assert a.shape == b.shape == (cpu.config.resolution,) * 2 + (3,)
    # same noise (drawn on the CPU generator), same sampler: only the half-precision arithmetic differs
    assert psnr(a, b) > 25.0


def test_cuda_batched_dual_guidance_in_half_precision():
    p = FramePredictor.from_pretrained("tiny", device="cuda")
    imgs = [_frame(s) for s in range(3)]
    texts = ["hand the block over to the right arm", "stack the blocks", "beat the block with the hammer"]
    batch = p.predict_batch(imgs, texts, steps=6, seed=5)
    assert len(batch) == 3 and all(np.isfinite(x.astype(np.float32)).all() for x in batch)
    assert batch[0].std() > 1.0  # not a blank frame


def test_compiled_predictor_matches_eager_on_cuda():
    """torch.compile (inductor, default mode: the quickest to compile) of the UNet and VAE decoder in bf16: the
    same sample as eager up to kernel-order rounding, and a second call does not compile again."""
    import time

    p = FramePredictor.from_pretrained("tiny", device="cuda")
    assert p.dtype == torch.bfloat16  # Hopper and Ampere support bf16: auto must pick it, not fp16
    img, text = _frame(), "hand the block over to the right arm"
    eager = p.predict(img, text, steps=4, seed=1, samples=1)
    p.compile(mode="default")
    first = p.predict(img, text, steps=4, seed=1, samples=1)
    torch.cuda.synchronize()
    t = time.perf_counter()
    again = p.predict(img, text, steps=4, seed=1, samples=1)
    torch.cuda.synchronize()
    assert time.perf_counter() - t < 5.0  # compiled already: no second compilation
    assert psnr(first, eager) > 28.0 and psnr(again, first) > 40.0


def test_embedded_planner_on_cuda():
    pl = GridPlanner.from_pretrained("tiny", device="cuda")
    assert pl.dtype == torch.bfloat16
    out = pl.plan(_frame(), "hand the block over to the right arm", steps=6, seed=0)
    frames = out.frames
    assert len(frames) == 9
    assert all(f.dtype == np.uint8 and f.std() > 1.0 for f in frames)


def test_bf16_training_step_on_cuda(tmp_path):
    from frameplan_training import run
    from frameplan_training.config import load_train_config
    from frameplan_training.synthetic import write_ip2p

    data = write_ip2p(tmp_path / "ip2p")
    cfg = load_train_config("predictor", None, [
        "image_size=40", "crop_res=32", "batch_size=8", "accelerator=gpu", "precision=bf16-mixed",
        "val_every_n_epochs=0", "sample_every_n_steps=0", "max_steps=30", "lr=3e-3", "warmup_steps=1",
        "log_every_n_steps=1", "ema_decay=0"])
    res = run.train("predictor", cfg, data, tmp_path / "run", enable_progress_bar=False)
    assert res.global_step == 30 and res.device.startswith("cuda")  # the module is back on the CPU after fit
    import csv

    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv")) if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    p = FramePredictor.from_pretrained(res.model_dir, device="cpu")
    assert p.predict(np.zeros((48, 64, 3), np.uint8), "stack the blocks", steps=2).shape == (32, 32, 3)

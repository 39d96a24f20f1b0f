"""One training run: build the core model and its LightningModule, the datamodule over the dataset folder, the
Lightning Trainer from the config (precision, strategy/devices, accumulation, clipping, validation cadence,
checkpoints every N steps, CSV or TensorBoard logs, sample PNGs), fit (optionally resuming exactly from a
checkpoint), and export the trained model with the core ``save_pretrained``.

Output folder: ``config.yaml`` (the resolved config), ``checkpoints/step=N.ckpt``, ``logs/``, ``samples/``,
``model/`` (the exported model), ``train_summary.json``."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from frameplan_training.config import (
    PlannerTrainConfig,
    PredictorTrainConfig,
    TrainConfig,
    VAETrainConfig,
)

from frameplan_core import atomic
from frameplan_core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# fields that must not change between a run and its resume (they define the model or the data order)
RESUME_INVARIANTS = ("model", "vae_from", "target", "crop", "condition", "seed", "batch_size", "image_size", "crop_res",
                     "train_base", "train_encoder", "adapter_name", "lora_rank", "lora_alpha",
                     "goal", "chunk", "action", "camera")


@dataclass
class TrainResult:
    out: Path
    model_dir: Path | None
    checkpoints: list[Path]
    global_step: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[Path] = field(default_factory=list)
    module: Any = None
    rank: int = 0  # global rank of this process; only rank 0 writes the model, summary, samples and checkpoints
    device: str = "cpu"  # where it trained: Lightning's teardown moves the module back to the CPU after fit


def build_module(kind: str, cfg: TrainConfig, device: str = "cpu"):
    """(LightningModule, dataset factory) for a model family."""
    if kind == "predictor":
        from frameplan_training.predictor_module import PredictorModule, load_predictor

        assert isinstance(cfg, PredictorTrainConfig)
        return PredictorModule(cfg, load_predictor(cfg, device))
    if kind == "planner":
        from frameplan_training.planner_module import PlannerModule, load_planner

        assert isinstance(cfg, PlannerTrainConfig)
        return PlannerModule(cfg, load_planner(cfg, device))
    if kind == "vae":
        from frameplan_training.vae_module import VAEModule, load_vae_owner

        assert isinstance(cfg, VAETrainConfig)
        return VAEModule(cfg, load_vae_owner(cfg, device))
    if kind == "policy":
        from frameplan_training.config import PolicyTrainConfig
        from frameplan_training.policy_module import PolicyModule, load_policy

        assert isinstance(cfg, PolicyTrainConfig)
        return PolicyModule(cfg, load_policy(cfg, device))
    raise ConfigError(f"unknown model family {kind!r}")


def dataset_factory(kind: str, cfg: TrainConfig, data: Path, module=None):
    """``factory(split, augment) -> Dataset`` for the datamodule."""
    from frameplan_training import datasets as D

    def make(split: str, augment: bool):
        common = {"max_bad": cfg.max_bad_samples}
        if kind == "predictor":
            policy = module.predictor.config.crop if module is not None else (cfg.crop or "center")
            return D.PairDataset(data, split, cfg.image_size, cfg.crop_res, cfg.crop_min_scale, cfg.flip_prob,
                                 cfg.color_jitter, policy=policy, mirror_prob=cfg.mirror_prob, **common)
        if kind == "vae":
            policy = module.predictor.config.crop if module is not None else (cfg.crop or "center")
            return D.FrameDataset(data, split, cfg.image_size, cfg.crop_res, cfg.crop_min_scale, cfg.flip_prob,
                                  cfg.color_jitter, policy=policy, **common)
        if kind == "planner":
            c: PlannerTrainConfig = cfg  # type: ignore[assignment]
            thickness = module.planner.config.thickness if module is not None else max(1, cfg.crop_res // 64)
            marks = module.planner.config.trajectory_marks if module is not None else bool(c.trajectory_marks)
            return D.GridSampleDataset(data, split, cfg.crop_res, cfg.color_jitter, c.drop_text_prob,
                                       c.drop_trajectory_prob, c.drop_both_prob, thickness, marks=marks, **common)
        if kind == "policy":
            from frameplan_training.policy_module import PolicyDataset

            return PolicyDataset(data, split, cfg, augment)  # type: ignore[arg-type]
        raise ConfigError(f"unknown model family {kind!r}")

    return make


def log_version(out: Path) -> str:
    """Logger version folder under ``out/logs``: "" for a fresh run, ``run2``, ``run3``, ... when logs exist (a
    ``--resume`` into the same folder), because Lightning's CSV logger deletes an existing metrics.csv."""
    logs = out / "logs"
    if not logs.is_dir() or not any(logs.iterdir()):
        return ""
    k = 2
    while (logs / f"run{k}").exists():
        k += 1
    return f"run{k}"


def atomic_checkpoint_io():
    """Lightning's checkpoint writer, except that the file is written beside its final name and renamed into place
    (frameplan_core.atomic): Lightning's own stages it in the system temp folder, which on a cluster is node-local,
    so a multi-GB checkpoint must fit there and the move onto a shared --out is a copy that a node failure can
    leave half-written as the newest checkpoint. Reading is Lightning's, unchanged."""
    import io

    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict, path, storage_options: Any | None = None) -> None:
            if storage_options is not None:
                raise TypeError(f"storage_options={storage_options!r}: not supported by frameplan's checkpoint writer")
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            atomic.write_bytes(path, buffer.getbuffer())

    return AtomicCheckpointIO()


def make_trainer(cfg: TrainConfig, out: Path, extra_callbacks: list | None = None, **overrides: Any):
    import lightning as L
    from frameplan_training.callbacks import SampleImages
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="{step:07d}", monitor="step", mode="max",
                           save_top_k=cfg.keep_checkpoints, every_n_train_steps=cfg.checkpoint_every_n_steps,
                           save_on_train_epoch_end=False, auto_insert_metric_name=True)
    samples = SampleImages(out / "samples", cfg.sample_every_n_steps, cfg.num_sample_images)
    version = log_version(out)
    logger = (TensorBoardLogger(out, name="logs", version=version) if cfg.logger == "tensorboard"
              else CSVLogger(out, name="logs", version=version))
    val_kw: dict[str, Any]
    if cfg.val_every_n_steps > 0:
        val_kw = {"val_check_interval": cfg.val_every_n_steps * cfg.accumulate_grad_batches,
                  "check_val_every_n_epoch": None}
    else:
        val_kw = {"check_val_every_n_epoch": max(1, cfg.val_every_n_epochs)}
    kwargs = dict(
        default_root_dir=str(out), max_epochs=cfg.max_epochs if cfg.max_epochs > 0 else -1, max_steps=cfg.max_steps,
        max_time=cfg.max_time, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy,
        precision=cfg.precision, accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.grad_clip or None, limit_val_batches=cfg.limit_val_batches if
        (cfg.val_every_n_epochs > 0 or cfg.val_every_n_steps > 0) else 0,
        logger=logger, callbacks=[ckpt, samples, *(extra_callbacks or [])], log_every_n_steps=cfg.log_every_n_steps,
        deterministic=cfg.deterministic, num_sanity_val_steps=0, use_distributed_sampler=False,
        enable_model_summary=False, plugins=[atomic_checkpoint_io()], **val_kw)
    kwargs.update(overrides)
    return L.Trainer(**kwargs), ckpt, samples


def read_checkpoint(ckpt_path: Path, flag: str) -> tuple[dict, dict]:
    """(the checkpoint, its frameplan_config); errors name the command-line flag and the file. Weights-only
    (frameplan_core.torchfile): a crafted checkpoint is refused instead of running its code."""
    from frameplan_core import torchfile

    if not ckpt_path.is_file():
        raise ConfigError(f"{flag} {ckpt_path}: checkpoint file not found")
    state = torchfile.load(ckpt_path, f"{flag} {ckpt_path}")
    saved = state.get("frameplan_config") if isinstance(state, dict) else None
    if saved is None:
        raise ConfigError(f"{flag} {ckpt_path}: not a frameplan training checkpoint (no frameplan_config)")
    return state, saved


def check_resume(cfg: TrainConfig, ckpt_path: Path) -> None:
    _, saved = read_checkpoint(ckpt_path, "--resume")
    now = dataclasses.asdict(cfg)
    diff = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in RESUME_INVARIANTS if saved.get(k) != now.get(k)]
    if diff:
        raise ConfigError(f"--resume {ckpt_path}: the config changed in fields that define the model or the data "
                          f"order ({'; '.join(diff)}); resume with the original values")


def export_checkpoint(kind: str, ckpt: str | Path, out: str | Path, ema: bool = True, overwrite: bool = False) -> Path:
    """Write the model of a training checkpoint (EMA weights unless ``ema`` is False) as a model folder, so that
    intermediate checkpoints can be evaluated and the best one on the validation split shipped."""
    from frameplan_core import config as cfgmod
    from frameplan_core.errors import ModelError
    from frameplan_training.config import CONFIG_CLASSES

    if kind not in ("predictor", "planner", "policy"):
        raise ConfigError(f"export {kind}: only predictor, planner and policy checkpoints can be exported this way "
                          "(the VAE's scaling factor is measured on its training data at the end of `frameplan train vae`)")
    ckpt, out = Path(ckpt), Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        what = "folder exists and is not empty" if out.is_dir() else "exists and is not a folder"
        raise ConfigError(f"--out {out}: {what} (pass --overwrite to replace it)")
    state, saved = read_checkpoint(ckpt, "--checkpoint")
    cfg = cfgmod.from_dict(CONFIG_CLASSES[kind], saved, f"{ckpt} (frameplan_config of a {kind} run?)")
    module = build_module(kind, cfg)
    module.on_load_checkpoint(state)  # refuses a checkpoint that lacks any trainable weight
    module.load_state_dict(state["state_dict"], strict=False)  # it holds the trainable weights only
    if ema:
        if module._ema_state is None:
            raise ModelError(f"--checkpoint {ckpt}: has no EMA weights (ema_decay was 0); export with --raw")
        module.on_fit_start()
        module.on_train_start()  # loads the EMA shadows
    folder = module.export(out)  # save_pretrained replaces an existing folder atomically
    log.info("exported %s step %s (%s weights) to %s", ckpt, state.get("global_step"), "EMA" if ema else "raw",
             folder)
    return folder


def epoch_limit_warning(cfg: TrainConfig, num_train: int, world_size: int = 1) -> str | None:
    """Say when ``max_epochs`` ends a run before ``max_steps`` (small datasets: a 101-grid planner run has only 13
    steps per epoch, so the default 400 epochs stop it at 5,200 steps whatever max_steps says)."""
    import math

    if cfg.max_steps < 1 or cfg.max_epochs < 1 or num_train < 1:
        return None
    per_rank = math.ceil(num_train / world_size)
    per_epoch = math.ceil(math.ceil(per_rank / cfg.batch_size) / cfg.accumulate_grad_batches)
    if cfg.max_epochs * per_epoch >= cfg.max_steps:
        return None
    return (f"max_epochs={cfg.max_epochs} x {per_epoch} optimizer steps per epoch ({num_train} training samples) = "
            f"{cfg.max_epochs * per_epoch} steps < max_steps={cfg.max_steps}: training stops at epoch "
            f"{cfg.max_epochs}; raise max_epochs (--set max_epochs=N) for a longer run")


def quiet_other_ranks(rank: int | None = None) -> None:
    """On every DDP rank but 0, show only warnings and errors of frameplan and no library progress bars, so a run
    on N processes prints its info and its model-loading bars once. ``rank`` None: the rank the launcher put in
    the environment (torchrun RANK, Lightning's LOCAL_RANK for its own child processes, SLURM_PROCID), read by
    Lightning; once the Trainer exists its global rank is passed."""
    if rank is None:
        from lightning.pytorch.utilities import rank_zero_only

        rank = int(getattr(rank_zero_only, "rank", 0) or 0)
    if rank == 0:
        return
    for name in ("frameplan", "frameplan_core", "frameplan_training"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import diffusers.utils.logging
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step=*.ckpt"))
    return ckpts[-1] if ckpts else None


def train(kind: str, cfg: TrainConfig, data: str | Path, out: str | Path, resume: str | Path | None = None,
          export: bool = True, extra_callbacks: list | None = None, **trainer_overrides: Any) -> TrainResult:
    """Run one training; ``resume`` = a checkpoint path or ``auto`` (latest in ``out/checkpoints``)."""
    import inspect
    import warnings

    import lightning as L
    import torch
    from frameplan_training.datamodule import FolderDataModule

    # the frozen VAE / text encoder are in eval mode on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise DataError(f"--data {data}: dataset folder not found")
    if kind == "policy":  # episodes -> the policy's frame cache (built once, refreshed as a collection grows)
        from frameplan_training.policy_module import prepare_data

        data = prepare_data(cfg, data, out)  # type: ignore[arg-type]
    ckpt_path: Path | None = None
    if resume == "auto":
        ckpt_path = latest_checkpoint(out)
        if ckpt_path is None:
            log.info("--resume auto: no checkpoint in %s, starting fresh", out / "checkpoints")
    elif resume:
        ckpt_path = Path(resume)
    if ckpt_path is not None:
        check_resume(cfg, ckpt_path)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    quiet_other_ranks()
    module = build_module(kind, cfg)
    dm = FolderDataModule(data, dataset_factory(kind, cfg, data, module), cfg.batch_size, cfg.seed, cfg.num_workers,
                          val_batches=cfg.limit_val_batches or None)
    dm.setup("fit")  # an empty or unconverted dataset is refused here, before anything is written to --out
    out.mkdir(parents=True, exist_ok=True)
    trainer, _, samples_cb = make_trainer(cfg, out, extra_callbacks, **trainer_overrides)
    quiet_other_ranks(trainer.global_rank)
    if trainer.is_global_zero:  # every DDP process runs this function; one writes
        atomic.write_text(out / "config.yaml", yaml.safe_dump({"kind": kind, **dataclasses.asdict(cfg)},
                                                              sort_keys=False))
    warning = epoch_limit_warning(cfg, len(dm.train_set), trainer.world_size)
    if warning:
        log.warning("%s", warning)
    t0 = time.perf_counter()
    # Lightning loads the checkpoint again: weights-only too where it can (2.6+; read_checkpoint has refused
    # anything else already)
    safe = {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, **safe)
    seconds = time.perf_counter() - t0
    device = str(trainer.strategy.root_device)  # the module itself is back on the CPU after Lightning's teardown
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    model_dir = None
    trainer.strategy.barrier("frameplan-export")  # all ranks done (rank 0's last checkpoint and samples written)
    if export and trainer.is_global_zero:
        model_dir = module.export(out / "model")  # EMA weights, identical on every rank
    trainer.strategy.barrier("frameplan-exported")  # no rank returns before the model folder exists
    result = TrainResult(out, model_dir, sorted((out / "checkpoints").glob("*.ckpt")), trainer.global_step, seconds,
                         metrics, list(samples_cb.written), module, trainer.global_rank, device)
    if trainer.is_global_zero:
        atomic.write_json(out / "train_summary.json", {
            "kind": kind, "data": str(data), "global_step": trainer.global_step, "epochs": trainer.current_epoch,
            "seconds": round(seconds, 2), "device": device, "world_size": trainer.world_size,
            "precision": cfg.precision,
            "resumed_from": str(ckpt_path) if ckpt_path else None, "metrics": metrics,
            "model_dir": str(model_dir) if model_dir else None, "config": dataclasses.asdict(cfg)})
    return result

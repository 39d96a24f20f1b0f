"""Training of the frameplan_core ``GridPlanner`` itself with its flow-matching loss (``GridPlanner.training_loss``):
a LoRA adapter on a frozen base (the normal case), or the whole base transformer for the embedded ``tiny`` model
that starts from random weights (``train_base``). VAE and text encoder stay frozen.

Modality dropout happens in the data (datasets.GridSampleDataset): per sample text+trajectory, text only,
trajectory only (empty instruction) or neither, with the trajectory taken from the episode's end-effector track
and drawn by frameplan_core.trajectory exactly as ``GridPlanner.plan`` draws it."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from frameplan_training.base_module import FrameplanModule, replace_vae
from frameplan_training.config import PlannerTrainConfig

from frameplan_core.errors import ConfigError

log = logging.getLogger(__name__)

LARGE_BASE = 500_000_000  # parameters; above this only the adapter is exported (a FLUX base is not copied)


def base_parameters(model: str) -> int:
    """Parameters of the transformer of a saved planner or FLUX folder, counted from its config.json on the meta
    device (nothing is allocated); 0 for a preset or a folder without one (loading then reports it)."""
    import json

    from diffusers import FluxTransformer2DModel

    config = Path(model) / "transformer" / "config.json"
    if not config.is_file():
        return 0
    try:
        tcfg = {k: v for k, v in json.loads(config.read_text()).items() if not k.startswith("_")}
        with torch.device("meta"):
            return sum(p.numel() for p in FluxTransformer2DModel.from_config(tcfg).parameters())
    except (OSError, ValueError, TypeError):
        return 0


def frozen_dtype(cfg: PlannerTrainConfig) -> str:
    """float32, or bfloat16 for a LoRA run in bf16 precision on a base of more than LARGE_BASE parameters (a FLUX.1-dev
    folder): its frozen transformer, text encoders and VAE are then held in bf16, half the memory (23.8 instead of
    47.6 GB for FLUX.1-dev's transformer, 9.5 instead of 19 GB for its T5-XXL), and autocast computes in bf16 either
    way. The adapter's trainable weights stay float32 (PlannerModule). A smaller base stays float32: it is exported
    whole, and would otherwise be saved rounded to bf16."""
    if cfg.train_base or not str(cfg.precision).startswith("bf16"):
        return "float32"
    return "bfloat16" if base_parameters(cfg.model) > LARGE_BASE else "float32"


def load_planner(cfg: PlannerTrainConfig, device: str = "cpu"):
    """The GridPlanner a run starts from (preset = random, seeded; or a saved folder) at cell size ``crop_res``,
    with the VAE of ``cfg.vae_from`` when given."""
    from frameplan_core.planner import GridPlanner, PlannerConfig
    from frameplan_core.planner.config import PRESETS

    if cfg.model in PRESETS and not Path(cfg.model).exists():
        over = {"cell_size": cfg.crop_res}
        if cfg.lora_rank:
            over["lora_rank"] = cfg.lora_rank
        if cfg.lora_alpha is not None:
            over["lora_alpha"] = cfg.lora_alpha
        if cfg.condition:
            over["condition"] = cfg.condition
        if cfg.target:
            over["target"] = cfg.target
        if cfg.trajectory_marks is not None:
            over["trajectory_marks"] = cfg.trajectory_marks
        if cfg.residual_base is not None:
            over["residual_base"] = cfg.residual_base
        planner = GridPlanner.from_config(PlannerConfig.preset(cfg.model, **over), seed=cfg.seed, device=device,
                                          dtype="float32")
    else:
        dtype = frozen_dtype(cfg)
        if dtype != "float32":
            log.info("LoRA in %s on a large base: frozen weights held in %s", cfg.precision, dtype)
        planner = GridPlanner.from_pretrained(cfg.model, device=device, dtype=dtype, cell_size=cfg.crop_res)
        if cfg.condition == "channel" and planner.config.condition != "channel" and not cfg.train_base:
            raise ConfigError(f"condition=channel on {cfg.model} (condition {planner.config.condition}) adds input "
                              "weights to the base transformer, which a LoRA run keeps frozen at zero: set "
                              "train_base=true")
        if cfg.condition and cfg.condition != planner.config.condition:
            log.info("planner condition %s -> %s (config condition)", planner.config.condition, cfg.condition)
            planner.set_condition(cfg.condition)
        if cfg.target and cfg.target != planner.config.target:
            log.info("planner target %s -> %s (config target)", planner.config.target, cfg.target)
            planner.config = dataclasses.replace(planner.config, target=cfg.target)  # validated by PlannerConfig
        if cfg.trajectory_marks is not None and cfg.trajectory_marks != planner.config.trajectory_marks:
            log.info("planner trajectory_marks %s -> %s (config)", planner.config.trajectory_marks,
                     cfg.trajectory_marks)
            planner.config = dataclasses.replace(planner.config, trajectory_marks=cfg.trajectory_marks)
        if cfg.residual_base is not None and cfg.residual_base != planner.config.residual_base:
            log.info("planner residual_base %s -> %s (config)", planner.config.residual_base, cfg.residual_base)
            planner.config = dataclasses.replace(planner.config, residual_base=cfg.residual_base)
    if cfg.vae_from:
        replace_vae(planner, cfg.vae_from)
    return planner


def _check_continued_adapter(cfg: PlannerTrainConfig, saved) -> None:
    """A saved adapter keeps its own rank and alpha: a different lora_rank/lora_alpha in the config would be
    silently ignored, so it is refused by name instead."""
    asked = (("lora_rank", cfg.lora_rank, saved.r), ("lora_alpha", cfg.lora_alpha, saved.lora_alpha))
    wrong = [f"{key}={want} (adapter {cfg.adapter_name!r} of {cfg.model} has {have})"
             for key, want, have in asked if want is not None and float(want) != float(have)]
    if wrong:
        raise ConfigError(f"continuing a saved adapter keeps its rank and alpha, but the config asks for "
                          f"{'; '.join(wrong)}: drop those settings, or set adapter_name to train a new adapter")


class PlannerModule(FrameplanModule):
    def __init__(self, cfg: PlannerTrainConfig, planner) -> None:
        super().__init__(cfg)
        # the core object's parts, registered so Lightning moves/checkpoints what GridPlanner.plan uses
        self.transformer = planner.transformer
        self.vae = planner.vae
        self.text = planner.text
        self.planner = planner
        if cfg.train_base:
            planner.trainable_parameters("full")
        else:
            if cfg.adapter_name in planner.adapters:
                _check_continued_adapter(cfg, planner.transformer.peft_config[cfg.adapter_name])
                planner.set_adapter(cfg.adapter_name)  # continue training a saved adapter
                for n, p in self.transformer.named_parameters():
                    p.requires_grad_(".lora_" in n and f".{cfg.adapter_name}." in n)
            else:
                planner.add_adapter(cfg.adapter_name, cfg.lora_rank, cfg.lora_alpha)
            planner.trainable_parameters("lora")
        self.vae.requires_grad_(False)
        if cfg.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.transformer.train()
        self._trainable = [(f"transformer.{n}", p) for n, p in self.transformer.named_parameters() if p.requires_grad]
        for _, p in self._trainable:  # float32 master weights (and optimizer states) even on a bf16 frozen base
            if p.dtype != torch.float32:
                p.data = p.data.float()
        n = sum(p.numel() for _, p in self._trainable)
        log.info("planner training %s: %.2fM trainable parameters", "base" if cfg.train_base else "LoRA", n / 1e6)

    def trainable_named_parameters(self):
        return self._trainable

    def frozen_modules(self):
        return [self.vae, self.text]

    def compute_loss(self, batch: dict, generator: torch.Generator | list[torch.Generator],
                     train: bool) -> tuple[torch.Tensor, dict]:
        texts = [t if t else None for t in batch["text"]]
        loss = self.planner.training_loss({"source": batch["source"], "target": batch["target"],
                                           "observation": batch["observation"], "instruction": texts}, generator)
        return loss, {}

    @torch.no_grad()
    def generate(self, first, text: str | None, trajectory, seed: int = 0):
        from frameplan_core.trajectory import Trajectory

        c: PlannerTrainConfig = self.cfg
        traj = Trajectory(trajectory, first.shape[:2]) if trajectory is not None else None
        was = self.transformer.training
        self.transformer.eval()
        try:
            with self.ema_applied():
                return self.planner.plan(first, instruction=text or None, trajectory=traj, steps=c.sample_steps,
                                         guidance=c.sample_guidance, seed=seed)
        finally:
            self.transformer.train(was)

    def sample_rows(self, n: int) -> list[tuple]:
        """(conditioning grid, generated grid, target grid) for the first ``n`` validation samples."""
        from frameplan_training.datasets import grid_example

        from frameplan_core.grid import compose

        ds = self.trainer.datamodule.val_set
        rows = []
        for pos in range(min(n, len(ds))):
            ex = grid_example(ds, pos)
            plan = self.generate(ex["first"], ex["text"], ex["trajectory"])
            rows.append((plan.conditioning, plan.grid, compose(ex["frames"])))
        return rows

    def export(self, folder: str | Path) -> Path:
        """Whole planner via save_pretrained (EMA weights), unless the base is FLUX-sized: then only the adapter
        (diffusers LoRA format) under ``folder/adapters/<name>``."""
        from frameplan_training.export import to_fp16_where_safe

        c: PlannerTrainConfig = self.cfg
        folder = Path(folder)
        self.transformer.eval()
        with self.ema_applied():
            if sum(p.numel() for p in self.transformer.parameters()) > LARGE_BASE and not c.train_base:
                self.planner.save_adapter(folder / "adapters" / c.adapter_name, c.adapter_name)
            else:
                self.planner.save_pretrained(folder)
        if c.export_fp16:
            to_fp16_where_safe(folder)
        return folder

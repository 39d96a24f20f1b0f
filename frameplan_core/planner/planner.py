"""``GridPlanner``: one observed frame (+ instruction and/or trajectory) -> a 3x3 serpentine grid of nine future
frames generated at once by a FLUX-layout transformer conditioned on the source grid (seed 004)."""
from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frameplan_core import uncertainty
from frameplan_core.errors import InputError
from frameplan_core.grid import compose, source_grid, split
from frameplan_core.image import ensure_rgb_uint8, fit
from frameplan_core.planner import lora, model, sampling
from frameplan_core.planner.chain import run_chain
from frameplan_core.planner.config import MAX_SAMPLES, PlannerConfig
from frameplan_core.predictor import compose as composition
from frameplan_core.seeds import check_seed, cpu_generator
from frameplan_core.text import TextCache, normalize_instruction, validate_instruction
from frameplan_core.trajectory import (
    Trajectory,
    as_trajectory,
    draw_trajectory,
    fit_points,
    time_marked_frames,
)
from frameplan_core.types import Plan

log = logging.getLogger(__name__)
TEXT_CACHE_SIZE = 4096


class GridPlanner:
    """Holds the modules and config; ``plan`` is the whole inference path, ``training_loss`` the training one."""

    def __init__(self, config: PlannerConfig, components: model.Components):
        self.config = config
        self._m = components
        self.text_cache = TextCache(lambda texts: self.text.encode(texts), TEXT_CACHE_SIZE)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: PlannerConfig | str = "tiny", seed: int = 0, device: Any = "cpu",
                    dtype: Any = "auto", text: Any = None) -> GridPlanner:
        """Random-initialised planner (seeded). ``text`` lets several planners share one loaded text encoder."""
        cfg = PlannerConfig.preset(config) if isinstance(config, str) else config
        mods, cfg = model.build_components(cfg, seed=seed, device=device, dtype=dtype, text=text)
        return cls(cfg, mods)

    @classmethod
    def from_pretrained(cls, path_or_preset: str | Path = "tiny", device: Any = "auto", dtype: Any = "auto",
                        cell_size: int | None = None) -> GridPlanner:
        """A frameplan checkpoint folder, ``tiny`` (the shipped weights), or a local FLUX.1-dev diffusers folder."""
        mods, cfg = model.load_components(path_or_preset, device=device, dtype=dtype, cell_size=cell_size)
        pl = cls(cfg, mods)
        log.info("planner loaded from %s: %s", mods.source, pl.describe())
        return pl

    def save_pretrained(self, folder: str | Path) -> Path:
        return model.save_components(self._m, self.config, folder)

    def describe(self) -> str:
        n_t = sum(p.numel() for p in self.transformer.parameters())
        n_v = sum(p.numel() for p in self.vae.parameters())
        return (f"{self.config.name}: transformer {n_t / 1e6:.2f}M params, VAE {n_v / 1e6:.2f}M, text "
                f"{self.config.text_encoder}, cell {self.config.cell_size}px, {self.dtype}, {self.device}, "
                f"adapters {self.adapters or 'none'}")

    # ------------------------------------------------------------ modules
    @property
    def device(self) -> torch.device:
        """Where the transformer's weights are: read from them, so it stays right when a trainer moves the parts."""
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def set_vae(self, vae) -> GridPlanner:
        """Swap in another (e.g. trained) ``AutoencoderKL`` whose latent channels fit the transformer (out_channels
        = 4 x latent channels): moved to the planner's device/dtype, frozen, and recorded in ``config.vae`` so
        save_pretrained/from_pretrained keep it."""
        from dataclasses import replace

        from frameplan_core.vae import check_replacement, vae_config

        tc = self.transformer.config
        check_replacement(vae, int(tc.out_channels or tc.in_channels) // 4, "GridPlanner.set_vae")
        dev, dt = self.device, self.dtype
        vae = vae.to(dev)
        if next(vae.parameters()).dtype != dt:
            vae = vae.to(dtype=dt)
        self._m.vae = vae.eval().requires_grad_(False)
        self.config = replace(self.config, vae=vae_config(vae))
        return self

    @property
    def transformer(self):
        return self._m.transformer

    @property
    def vae(self):
        return self._m.vae

    @property
    def text(self):
        return self._m.text

    @property
    def scheduler(self):
        return self._m.scheduler

    # ------------------------------------------------------------ LoRA adapters
    @property
    def adapters(self) -> list[str]:
        return lora.adapter_names(self.transformer)

    @property
    def active_adapter(self) -> str | None:
        return lora.active_adapter(self.transformer)

    def add_adapter(self, name: str, rank: int | None = None, alpha: float | None = None) -> None:
        """A fresh trainable adapter (config rank/alpha by default); it becomes active; base weights frozen."""
        rank = rank or self.config.lora_rank
        alpha = alpha if alpha is not None else (self.config.alpha if rank == self.config.lora_rank else rank)
        lora.add_adapter(self.transformer, name, rank, alpha)

    def load_adapter(self, path: str | Path, name: str) -> None:
        lora.load_adapter(self.transformer, path, name)
        self._m.adapters[name] = str(path)

    def save_adapter(self, folder: str | Path, name: str | None = None) -> Path:
        name = name or self.active_adapter
        if name is None:
            raise InputError("save_adapter: no adapter name given and none active")
        return lora.save_adapter(self.transformer, folder, name)

    def set_adapter(self, name: str | None) -> None:
        lora.set_adapter(self.transformer, name)

    def merge_adapter(self) -> None:
        lora.merge(self.transformer)

    def unmerge_adapter(self) -> None:
        lora.unmerge(self.transformer)

    def delete_adapter(self, name: str) -> None:
        lora.delete_adapter(self.transformer, name)
        self._m.adapters.pop(name, None)

    # ------------------------------------------------------------ conditioning
    def prepare_frame(self, image: np.ndarray, trajectory: Any = None) -> tuple[np.ndarray, np.ndarray,
                                                                                np.ndarray | None]:
        """Input image (any size) -> (clean cell, cell with the trajectory drawn, trajectory in cell pixels)."""
        image = ensure_rgb_uint8(image, "planner image")
        cell = fit(image, self.config.cell_size, self.config.crop_policy)
        if trajectory is None:
            return cell, cell, None
        traj = as_trajectory(trajectory)
        if traj.image_hw is not None and tuple(traj.image_hw) != image.shape[:2]:
            raise InputError(f"trajectory is in pixels of a {traj.image_hw[1]}x{traj.image_hw[0]} image but the "
                             f"input image is {image.shape[1]}x{image.shape[0]}", kind="trajectory")
        pts = fit_points(traj.points, image.shape[:2], self.config.cell_size, self.config.crop_policy)
        drawn = draw_trajectory(cell, Trajectory(pts), thickness=self.config.thickness)
        return cell, drawn, pts

    def conditioning_grid(self, image: np.ndarray, trajectory: Any = None) -> np.ndarray:
        """The source grid a sample is conditioned on: frame 1 (trajectory drawn if given) laid out as
        ``config.condition`` says (top-left with black elsewhere, or in every cell)."""
        _, drawn, pts = self.prepare_frame(image, trajectory)
        return self._source(drawn, pts)

    def _source(self, drawn: np.ndarray, pts: np.ndarray | None) -> np.ndarray:
        """Frame 1 (path drawn) in this planner's layout; with ``trajectory_marks`` and a path, every cell also
        marks where the path is at that cell's time (trajectory.time_marked_frames)."""
        if pts is not None and self.config.trajectory_marks:
            return compose(time_marked_frames(drawn, pts, self.config.thickness))
        return source_grid(drawn, self.config.layout)

    def set_condition(self, condition: str) -> GridPlanner:
        """Switch how the source grid is fed (PlannerConfig.condition) before fine-tuning. Into ``channel`` the
        transformer's input projection gains the condition's channels with zero weights (InstructPix2Pix's trick),
        so the model starts as the old one without the condition and learns to use it; out of ``channel`` is
        refused (it would drop trained weights)."""
        from dataclasses import replace

        from frameplan_core.planner.config import CONDITIONS

        if condition not in CONDITIONS:
            raise InputError(f"planner condition {condition!r}: expected one of {list(CONDITIONS)}")
        old = self.config.condition
        if condition == old:
            return self
        if old == "channel":
            raise InputError(f"planner condition channel -> {condition}: the transformer's condition input weights "
                             "would be dropped; start from a sequence-conditioned model instead")
        if condition == "channel":
            model.widen_input(self.transformer, 2 * self.transformer.x_embedder.in_features)
        self.config = replace(self.config, condition=condition, transformer=model.transformer_config(self.transformer))
        return self

    def condition_pixels(self, source: Any) -> torch.Tensor:
        """A batch of source grids (uint8 (B, 3c, 3c, 3) or float (B, 3, H, W)) -> float pixels in this planner's
        layout. Training data stores the seed's layout (frame 1 top-left, black elsewhere): such a grid is tiled
        from cell 1; a grid whose other cells hold anything (already tiled, or time-marked cells) comes out
        unchanged."""
        x = sampling.to_pixels(source, self.device, torch.float32)
        if x.shape[2] % 3 or x.shape[3] % 3:
            raise InputError(f"source grid of {x.shape[3]}x{x.shape[2]} px is not 3x3 equal cells")
        if self.config.layout == "tiled":
            h, w = x.shape[2] // 3, x.shape[3] // 3
            rest = torch.ones_like(x[:1, :1], dtype=torch.bool)
            rest[..., :h, :w] = False
            empty = ((x <= -1.0) | ~rest).flatten(1).all(1)  # cells 2-9 exact black: the seed's layout
            x = torch.where(empty[:, None, None, None], x[:, :, :h, :w].repeat(1, 1, 3, 3), x)
        return x

    def target_grid(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Nine frames in time order (any size) -> the serpentine target grid at this planner's cell size."""
        if len(frames) != 9:
            raise InputError(f"target grid needs 9 frames, got {len(frames)}")
        return compose([fit(ensure_rgb_uint8(f, f"frame {i + 1}"), self.config.cell_size, self.config.crop_policy)
                        for i, f in enumerate(frames)])

    def encode_text(self, texts: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) token states and (B, P) pooled vectors; None/'' is the dropped-text embedding. Texts are
        normalised here (training's dataset text comes this way; ``plan`` validates and normalises at its boundary
        and skips this); results are cached in ``text_cache`` (the encoder is frozen; training reuses a few
        thousand instructions)."""
        return self._embed(["" if t is None else normalize_instruction(str(t)) for t in texts])

    def _embed(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_text`` for texts already normalised ('' = no text)."""
        states, pooled = self.text_cache.get(texts, (self.device, self.dtype))
        return states.to(self.device, self.dtype), pooled.to(self.device, self.dtype)

    def _latent_hw(self, grid_hw: tuple[int, int]) -> tuple[int, int]:
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        h, w = grid_hw
        if h % (2 * f) or w % (2 * f):
            raise InputError(f"grid of {w}x{h} px is not divisible into packable cells: each side must be a "
                             f"multiple of {2 * f} px (VAE ÷{f}, then 2x2 packing)")
        return h // f, w // f

    # ------------------------------------------------------------ inference
    def _generate(self, cond_grid: np.ndarray, instruction: str | None, steps: int, guidance: float,
                  generator: torch.Generator, samples: int = 1) -> np.ndarray:
        """One grid; ``samples`` > 1 draws that many in one batch and returns their per-pixel mean."""
        return self._generate_full(cond_grid, instruction, steps, guidance, generator, samples)[0]

    def _generate_full(self, cond_grid: np.ndarray, instruction: str | None, steps: int, guidance: float,
                       generator: torch.Generator, samples: int = 1, observed: np.ndarray | None = None,
                       compose_threshold: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """``_generate`` and, with ``samples`` > 1, the grid's (3c, 3c) uncertainty map from the same samples
        (their standard deviation in grey levels, uncertainty.py); None for one sample. With ``compose_threshold``
        > 0 and the ``observed`` cell (no path drawn), unchanged pixels are the observation's (PlannerConfig.compose);
        the uncertainty map stays that of the generated samples."""
        hw = self._latent_hw(cond_grid.shape[:2])
        cond = sampling.pack(sampling.encode(self.vae, cond_grid[None])).to(self.dtype).repeat(samples, 1, 1)
        text, pooled = self._embed([instruction or ""])
        text, pooled = text.repeat(samples, 1, 1), pooled.repeat(samples, 1)
        tokens = sampling.sample(self.transformer, self.scheduler, cond, hw, text, pooled, steps, guidance, generator)
        if self.config.target == "residual":  # the flow generated the change from the tiled observation
            tokens = tokens + self._residual_base(cond, cond_grid, observed)
        x = sampling.decode_levels(self.vae, sampling.unpack(tokens, *hw))
        grid = x.mean(0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        if compose_threshold > 0 and observed is not None:
            grid = self._compose(grid, observed, compose_threshold)
        return grid, (uncertainty.sample_spread(x[:, None])[0] if samples > 1 else None)

    def _residual_base(self, cond: torch.Tensor, cond_grid: np.ndarray, observed: np.ndarray | None) -> torch.Tensor:
        """Packed latent the residual is added to: the conditioning's, or (``residual_base: observation``) the plain
        tiled observation's when a path was drawn on the conditioning."""
        if self.config.residual_base == "condition" or observed is None:
            return cond
        plain = source_grid(observed, "tiled")
        if plain.shape == cond_grid.shape and (plain == cond_grid).all():
            return cond
        return sampling.pack(sampling.encode(self.vae, plain[None])).to(self.dtype).expand_as(cond)

    def _compose(self, grid: np.ndarray, observed: np.ndarray, threshold: int) -> np.ndarray:
        """The plan grid with the observation's own pixels wherever it shows no change from the observation's VAE
        reconstruction (so the autoencoder's loss does not count as change); see predictor/compose.py."""
        tiled = source_grid(observed, "tiled")
        ref = sampling.decode_levels(self.vae, sampling.encode(self.vae, tiled[None]))[0]
        ref = ref.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        c = self.config
        mask = composition.change_mask(grid, ref, threshold, c.compose_dilate, c.compose_feather)
        return composition.compose(grid, tiled, mask)

    def plan(self, image: np.ndarray, instruction: str | None = None, trajectory: Any = None,
             steps: int | None = None, guidance: float | None = None, seed: int | None = None,
             adapter: str | None = None, chain: int = 1, samples: int | None = None,
             compose: int | None = None) -> Plan:
        """Generate 8*chain + 1 frames (9 for one grid) in time order at cell resolution.

        ``instruction``: checked and normalised like the predictor's (text.validate_instruction); None or a blank
        string plans without text. ``seed``: None means 0, as for the predictor (seeds.py). ``trajectory``: (N, 2)
        pixel points in ``image``'s coordinates, a Trajectory, or a dict (see trajectory.as_trajectory); it is drawn
        on frame 1 of the first grid only. ``adapter``: use this LoRA for this call only ('none' = base weights);
        None keeps the current selection. The observed frame replaces cell 1 of each generated grid (it is an
        input, not a prediction). ``samples``: plans averaged per pixel (default: the config's; PlannerConfig).
        ``compose``: change-mask threshold (default: the config's; 0 = off; PlannerConfig.compose)."""
        steps = self.config.steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise InputError(f"steps={steps!r}: must be an integer >= 1")
        steps = int(steps)
        guidance = self.config.guidance if guidance is None else guidance
        if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real) or not np.isfinite(guidance):
            raise InputError(f"guidance={guidance!r}: must be a finite number")
        guidance = float(guidance)
        samples = self.config.samples if samples is None else samples
        if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or not 1 <= samples <= MAX_SAMPLES:
            raise InputError(f"samples={samples!r}: must be an integer in [1, {MAX_SAMPLES}]")
        samples = int(samples)
        compose = self.config.compose if compose is None else compose
        if isinstance(compose, bool) or not isinstance(compose, numbers.Integral) or not 0 <= compose <= 254:
            raise InputError(f"compose={compose!r}: must be an integer in [0, 254]")
        compose = int(compose)
        instruction = validate_instruction(instruction, "instruction", optional=True)
        seed = check_seed(seed, "plan.seed")
        cell, drawn, pts = self.prepare_frame(image, trajectory)
        previous = self.active_adapter
        if adapter is not None:
            self.set_adapter(adapter)
        gen = cpu_generator(seed)  # device-independent: same seed, same plan on CPU and GPU
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        spreads: list[np.ndarray] = []
        try:
            def make_grid(frame: np.ndarray, first: bool) -> tuple[np.ndarray, np.ndarray]:
                cond = self._source(drawn, pts) if first else source_grid(frame, self.config.layout)
                t = time.perf_counter()
                grid, spread = self._generate_full(cond, instruction, steps, guidance, gen, samples, frame, compose)
                c = self.config.cell_size
                grid[:c, :c] = frame  # observed cell 1
                if spread is not None:
                    spread[:c, :c] = 0.0  # an input, known exactly
                    spreads.append(spread)
                timings[f"grid_{len(timings) + 1}_s"] = time.perf_counter() - t
                return grid, cond

            frames, grids, conds = run_chain(cell, chain, make_grid)
        finally:
            if adapter is not None:
                self.set_adapter(previous)
        timings["total_s"] = time.perf_counter() - t0
        maps = [m for k, g in enumerate(spreads) for m in (split(g) if k == 0 else split(g)[1:])] or None
        return Plan(frames=frames, grid=grids[-1], grids=grids, conditioning=conds[0], instruction=instruction,
                    trajectory=pts,
                    inputs={"steps": steps, "guidance": guidance, "seed": seed, "chain": chain, "samples": samples,
                            "compose": compose,
                            "adapter": adapter if adapter is not None else previous, "model": self.config.name,
                            "cell_size": self.config.cell_size, "modalities":
                            [m for m, on in (("text", instruction), ("trajectory", pts is not None)) if on]},
                    timings=timings, uncertainty=maps, grid_uncertainty=spreads[-1] if spreads else None,
                    frame_confidence=None if maps is None else [uncertainty.confidence(m) for m in maps],
                    confidence=None if maps is None else uncertainty.confidence_of(maps[1:]),
                    uncertainty_note=None if maps is not None else uncertainty.ONE_SAMPLE)

    # ------------------------------------------------------------ training
    def trainable_parameters(self, mode: str = "lora") -> list[torch.nn.Parameter]:
        """``lora``: the active adapter's parameters (add one first); ``full``: every transformer weight (the
        tiny model trained from scratch)."""
        if mode == "full":
            self.transformer.requires_grad_(True)
            return [p for p in self.transformer.parameters()]
        if mode != "lora":
            raise InputError(f"trainable mode {mode!r}: expected lora or full")
        name = self.active_adapter
        if name is None:
            raise InputError("no active adapter to train: call add_adapter(name) first")
        params = [p for n, p in self.transformer.named_parameters() if ".lora_" in n and f".{name}." in n]
        for p in params:
            p.requires_grad_(True)
        return params

    def training_loss(self, batch: dict[str, Any],
                      generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """Flow-matching loss for a batch; the trainer owns optimiser, dropout sampling and logging. ``generator``:
        one for the batch, or a list of one per sample (each sample's noise level and noise from its own).

        batch: ``source`` and ``target`` grids (uint8 (B, 3c, 3c, 3) numpy/tensor, or float (B, 3, H, W) in
        [-1, 1]); ``instruction`` list of str/None; ``observation``: the source grids without a drawn path (needed
        by ``residual_base: observation``); optional ``drop_text`` (B,) bool: True replaces the
        instruction by the empty-text embedding. Trajectory dropout is choosing the source grid with or without
        the drawn path, done by the data pipeline; ``source`` may be in either layout (``condition_pixels``
        lays it out as ``config.condition`` says). Optional ``sigmas`` (B,)
        fixes the noise levels (else sampled per config.timestep_sampling)."""
        for key in ("source", "target", "instruction"):
            if key not in batch:
                raise InputError(f"training batch: missing {key!r} (have {sorted(batch)})")
        texts = list(batch["instruction"])
        drop = batch.get("drop_text")
        if drop is not None:
            drop = [bool(d) for d in (drop.tolist() if hasattr(drop, "tolist") else drop)]
            texts = [None if d else t for t, d in zip(texts, drop)]
        target = sampling.encode(self.vae, batch["target"])
        cond = sampling.encode(self.vae, self.condition_pixels(batch["source"]))
        if target.shape != cond.shape:
            raise InputError(f"training batch: source latent {tuple(cond.shape)} != target {tuple(target.shape)}")
        if len(texts) != target.shape[0]:
            raise InputError(f"training batch: {len(texts)} instructions for {target.shape[0]} grids")
        hw = (int(target.shape[2]), int(target.shape[3]))
        text, pooled = self.encode_text(texts)
        sigmas = batch.get("sigmas")
        if sigmas is None:
            sigmas = sampling.sample_sigmas(target.shape[0], self.config.timestep_sampling, generator, self.device)
        sigmas = torch.as_tensor(sigmas, device=self.device)
        target, cond = sampling.pack(target).to(self.dtype), sampling.pack(cond).to(self.dtype)
        if self.config.target == "residual":
            if self.config.residual_base == "observation":
                if "observation" not in batch:
                    raise InputError("training batch: residual_base 'observation' needs the plain 'observation' "
                                     "grids (the source without its drawn path)")
                base = sampling.pack(sampling.encode(self.vae, self.condition_pixels(batch["observation"])))
                target = target - base.to(self.dtype)
            else:
                target = target - cond
        return sampling.flow_matching_loss(self.transformer, target, cond, hw, text, pooled,
                                           self.config.guidance, sigmas, generator)

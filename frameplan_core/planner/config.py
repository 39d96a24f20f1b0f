"""Planner configuration: one dataclass saved as ``frameplan.json`` beside the weights, with two presets.

``tiny`` is the embedded default (small FLUX-layout transformer, small ÷8 VAE, MiniLM text); ``flux-dev`` mirrors
FLUX.1-dev (its transformer config ships as JSON in ``frameplan_core/presets/`` so nothing is ever fetched)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frameplan_core import config as cfgmod
from frameplan_core.errors import ConfigError
from frameplan_core.jsonfile import read_json

PRESETS = ("tiny", "flux-dev")
CONDITIONS = ("first_cell", "tiled", "channel")
MAX_SAMPLES = 64  # plans averaged per call: all of them run as one batch, so this bounds the memory
FLUX_DEV_TRANSFORMER_JSON = "planner_flux_dev_transformer.json"
FLUX_DEV_SCHEDULER_JSON = "planner_flux_dev_scheduler.json"


def load_preset_json(name: str) -> dict[str, Any]:
    """Read a JSON file shipped in ``frameplan_core/presets/``."""
    path = Path(__file__).resolve().parent.parent / "presets" / name
    data = read_json(path, ConfigError, missing="preset file missing from the installation")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def tiny_transformer_config() -> dict[str, Any]:
    """A FluxTransformer2DModel small enough to train and sample on a CPU (inner dim 64, 2+2 blocks).

    ``in_channels`` is filled from the VAE (4 x latent channels, 2x2 packing) when the model is built."""
    return {
        "patch_size": 1,
        "num_layers": 2,
        "num_single_layers": 2,
        "attention_head_dim": 32,
        "num_attention_heads": 2,
        "joint_attention_dim": 384,  # MiniLM per-token states
        "pooled_projection_dim": 384,  # mean-pooled MiniLM states
        "guidance_embeds": True,  # same layout as FLUX.1-dev: guidance is an input embedding, not CFG
        "axes_dims_rope": [8, 12, 12],
    }


def flow_scheduler_config() -> dict[str, Any]:
    """FlowMatchEulerDiscreteScheduler settings of FLUX.1-dev (resolution-dependent shift)."""
    return load_preset_json(FLUX_DEV_SCHEDULER_JSON)


@dataclass
class PlannerConfig:
    """Everything needed to rebuild a planner except the weights.

    cell_size: side of one grid cell in pixels (the grid is 3*cell_size square); must be a multiple of 16 so the
    ÷8 latent of the whole grid packs 2x2 into tokens.
    vae: AutoencoderKL config dict; ``None`` for the tiny preset means "the shared tiny ÷8 VAE preset".
    text_encoder: ``minilm`` (tiny) or ``clip+t5`` (FLUX.1-dev: CLIP pooled + T5 tokens).
    guidance: FLUX.1-dev distilled-guidance value fed to the transformer's guidance embedding (one pass per step).
    condition: how the source grid enters the transformer. ``first_cell`` (the seed's: frame 1 top-left, black
    elsewhere) and ``tiled`` (frame 1 in every cell) are source-grid layouts whose tokens are appended along the
    sequence; ``channel`` is the tiled grid concatenated on the token channels instead (FLUX.1-Fill's way: the
    transformer's ``in_channels`` doubles, ``out_channels`` stays), so each target token reads the observation at
    its own position in its input embedding. Training and inference use the same one.
    target: what the flow generates: ``grid`` (the nine frames' latent) or ``residual`` (their change from the
    tiled observation's latent, added back before decoding; "nothing moves" is then the zero residual instead of
    a copy the model has to learn). ``residual`` needs a tiled layout (``tiled`` or ``channel``).
    residual_base: what a ``residual`` target is the change from: ``condition`` (the conditioning grid as fed, so a
    drawn path or its marks are part of the base and the flow has to erase them; v3–v6) or ``observation`` (the
    plain tiled observation: drawings only condition, and "nothing moves" is the zero residual with or without a
    path). Training batches then carry the plain ``observation`` grid.
    trajectory_marks: with a tiled layout, a given path is drawn on frame 1 in every cell and each cell also gets a
    disc where the path is at that cell's time (trajectory.time_marked_frames): the cell is told where the end
    effector should be instead of decoding it from the line's colour. Training and inference use the same one.
    compose: > 0 keeps the camera's own pixels where a plan frame shows no change (predictor/compose.py, as the
    predictor does): pixels whose difference from the VAE reconstruction of the observation stays within
    ``compose`` of 255 are the observation's, the rest the plan's (mask grown by ``compose_dilate`` px, feathered
    by ``compose_feather`` px). 0 = the decoded plan as is.
    samples: plans drawn (one batch) and averaged per pixel: the *expected* frames, smoother than one plan, about
    ``samples`` times the work; 1 = one plan.
    """

    name: str = "tiny"
    cell_size: int = 256
    transformer: dict[str, Any] = field(default_factory=tiny_transformer_config)
    vae: dict[str, Any] | None = None
    scheduler: dict[str, Any] = field(default_factory=flow_scheduler_config)
    text_encoder: Literal["minilm", "clip+t5"] = "minilm"
    max_text_tokens: int = 77
    steps: int = 20
    guidance: float = 3.5
    samples: int = 1
    lora_rank: int = 128
    lora_alpha: float | None = None  # None -> alpha = rank
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    trajectory_thickness: int = 0  # 0 -> max(1, cell_size // 64)
    crop_policy: Literal["center", "resize", "pad"] = "center"
    condition: Literal["first_cell", "tiled", "channel"] = "first_cell"
    target: Literal["grid", "residual"] = "grid"
    trajectory_marks: bool = False
    residual_base: Literal["condition", "observation"] = "condition"
    compose: int = 0
    compose_dilate: int = 2
    compose_feather: int = 2

    def __post_init__(self) -> None:
        if self.cell_size <= 0 or self.cell_size % 16:
            raise ConfigError(
                f"planner cell_size={self.cell_size}: must be a positive multiple of 16 (3 cells -> ÷8 latent -> 2x2 tokens)"
            )
        if self.steps < 1:
            raise ConfigError(f"planner steps={self.steps}: must be >= 1")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or not 1 <= self.samples <= MAX_SAMPLES:
            raise ConfigError(f"planner samples={self.samples!r}: expected an integer in [1, {MAX_SAMPLES}]")
        if self.lora_rank < 1:
            raise ConfigError(f"planner lora_rank={self.lora_rank}: must be >= 1")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ConfigError(f"planner lora_alpha={self.lora_alpha}: must be > 0 (the adapter is scaled by alpha / rank)")
        if self.trajectory_thickness < 0:
            raise ConfigError(f"planner trajectory_thickness={self.trajectory_thickness}: must be >= 0 "
                              "(0 = max(1, cell_size // 64))")
        if self.condition not in CONDITIONS:
            raise ConfigError(f"planner condition={self.condition!r}: expected one of {list(CONDITIONS)}")
        if self.target not in ("grid", "residual"):
            raise ConfigError(f"planner target={self.target!r}: expected 'grid' or 'residual'")
        if self.target == "residual" and self.condition == "first_cell":
            raise ConfigError("planner target='residual' needs the observation in every cell: condition 'tiled' or "
                              "'channel', not 'first_cell'")
        if not isinstance(self.trajectory_marks, bool):
            raise ConfigError(f"planner trajectory_marks={self.trajectory_marks!r}: expected true or false")
        if self.trajectory_marks and self.condition == "first_cell":
            raise ConfigError("planner trajectory_marks=true marks every cell of the tiled observation: condition "
                              "'tiled' or 'channel', not 'first_cell'")
        if self.residual_base not in ("condition", "observation"):
            raise ConfigError(f"planner residual_base={self.residual_base!r}: expected 'condition' or 'observation'")
        for name, hi in (("compose", 254), ("compose_dilate", 32), ("compose_feather", 32)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
                raise ConfigError(f"planner {name}={v!r}: expected an integer in [0, {hi}]")
        if self.max_text_tokens < 1:
            raise ConfigError(f"planner max_text_tokens={self.max_text_tokens}: must be >= 1")

    @property
    def layout(self) -> str:
        """Source-grid layout (``grid.source_grid``): the channel mode uses the tiled grid."""
        return "first_cell" if self.condition == "first_cell" else "tiled"

    @property
    def channel_condition(self) -> bool:
        return self.condition == "channel"

    @property
    def grid_size(self) -> int:
        return 3 * self.cell_size

    @property
    def alpha(self) -> float:
        return float(self.lora_rank if self.lora_alpha is None else self.lora_alpha)

    @property
    def thickness(self) -> int:
        return self.trajectory_thickness or max(1, self.cell_size // 64)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PlannerConfig:
        """``tiny`` or ``flux-dev``; keyword overrides replace fields (e.g. ``cell_size=64``)."""
        if name == "tiny":
            base = cls(name="tiny", lora_rank=16)
        elif name == "flux-dev":
            base = cls(
                name="flux-dev",
                cell_size=256,
                transformer=load_preset_json(FLUX_DEV_TRANSFORMER_JSON),
                vae=None,
                text_encoder="clip+t5",
                max_text_tokens=512,
                lora_rank=128,
            )
        else:
            raise ConfigError(f"planner preset {name!r}: expected one of {list(PRESETS)}")
        return dataclasses.replace(base, **overrides) if overrides else base

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "frameplan.json") -> PlannerConfig:
        return cfgmod.from_dict(cls, data, where)

"""Training configs: YAML in ``config/train_*.yaml`` mapped onto these dataclasses (shape of InstructPix2Pix's
``train.yaml``: image size, crop, lr 1e-4 with linear warmup then constant, AdamW, batch size, accumulation, max
epochs, validation and sample-image cadence, precision, seed). Unknown keys are rejected; ``--set key=value``
overrides any field (see ``frameplan_core.config``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from frameplan_core import config as cfgmod
from frameplan_core.errors import ConfigError

Kind = Literal["predictor", "planner", "vae", "policy"]
KINDS: tuple[str, ...] = ("predictor", "planner", "vae", "policy")


@dataclass
class TrainConfig:
    """Fields shared by every model family.

    model: preset name (``tiny``) or a saved model folder to start from (fine-tuning / continuing).
    vae_from: optional saved model folder whose (trained) VAE replaces the one of ``model``; this is how the
        embedded pipeline reuses the VAE trained by ``frameplan train vae``.
    image_size: frames are first centre-cropped and resized to this square size.
    crop_res: the random resized crop is resized to this size (= model input resolution; the planner uses it as
        the grid *cell* size and crops nothing).
    crop_min_scale: the crop side is drawn uniformly in [crop_min_scale, 1] x image_size (1.0 = no crop).
    color_jitter: brightness, contrast and saturation factors drawn in [1 - j, 1 + j], applied identically to
        every image of a sample (input, target and grid cells), on top of the simulator's randomisation.
    warmup_steps: linear warmup of the learning rate from 0 to ``lr`` over this many optimizer steps, then constant.
    lr_decay_steps: optional cooldown: the lr falls linearly from ``lr`` to 0 over the last this-many optimizer
        steps before ``max_steps`` (a warmup-stable-decay schedule; needs max_steps). 0 = constant to the end (IP2P).
        Because the decay is placed by max_steps, a run can be resumed with a cooldown it did not have before.
    val_every_n_epochs / val_every_n_steps: validation cadence (steps wins when > 0).
    max_time: optional wall-clock budget "DD:HH:MM:SS" (Lightning's ``max_time``); training stops cleanly at the
        first of max_steps / max_epochs / max_time and the model is still exported (time-boxed GPU leases).
    ema_decay: EMA of the trainable weights (0 disables); the decay ramps as min(decay, (1+t)/(10+t)).
    precision: Lightning precision string: 32-true, bf16-mixed, 16-mixed, ...
    strategy / devices / num_nodes / accelerator: passed to the Lightning Trainer (e.g. strategy ddp, devices 8).
    max_bad_samples: unreadable samples are reported by path and skipped; more than this stops training.
    deterministic: torch.use_deterministic_algorithms (exact reproducibility, slower on GPU).
    """

    model: str = "tiny"
    vae_from: str | None = None
    seed: int = 0
    image_size: int = 256
    crop_res: int = 256
    crop_min_scale: float = 0.85
    flip_prob: float = 0.0
    mirror_prob: float = 0.0  # predictor: flip the pair and exchange left/right in its instruction (arm-naming data)
    color_jitter: float = 0.1
    batch_size: int = 4
    accumulate_grad_batches: int = 1
    lr: float = 1e-4
    warmup_steps: int = 500
    lr_decay_steps: int = 0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    max_epochs: int = 100
    max_steps: int = -1
    max_time: str | None = None
    val_every_n_epochs: int = 1
    val_every_n_steps: int = 0
    limit_val_batches: int = 8
    sample_every_n_steps: int = 500
    num_sample_images: int = 4
    sample_steps: int = 20
    checkpoint_every_n_steps: int = 1000
    keep_checkpoints: int = 2
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    num_workers: int = 0
    ema_decay: float = 0.9999
    gradient_checkpointing: bool = False
    logger: Literal["csv", "tensorboard"] = "csv"
    log_every_n_steps: int = 10
    max_bad_samples: int = 10
    deterministic: bool = False
    export_fp16: bool = True

    def __post_init__(self) -> None:
        positive = ("image_size", "crop_res", "batch_size", "accumulate_grad_batches", "num_sample_images",
                    "sample_steps", "checkpoint_every_n_steps", "keep_checkpoints", "log_every_n_steps", "num_nodes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.crop_res > self.image_size:
            raise ConfigError(f"crop_res={self.crop_res} exceeds image_size={self.image_size}")
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ConfigError(f"crop_min_scale={self.crop_min_scale}: must be in (0, 1]")
        for name in ("color_jitter", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: out of range [0, 1)")
        for name in ("flip_prob", "mirror_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: a probability, must be in [0, 1]")
        if self.flip_prob > 0 and self.mirror_prob > 0:
            raise ConfigError("flip_prob and mirror_prob are both > 0: use one (mirror_prob also exchanges left and "
                              "right in the instruction)")
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr}: must be > 0")
        if min(self.warmup_steps, self.sample_every_n_steps, self.val_every_n_steps, self.max_bad_samples,
               self.num_workers, self.limit_val_batches) < 0:
            raise ConfigError("warmup_steps, sample_every_n_steps, val_every_n_steps, limit_val_batches, "
                              "max_bad_samples and num_workers must be >= 0")
        if self.lr_decay_steps < 0:
            raise ConfigError(f"lr_decay_steps={self.lr_decay_steps}: must be >= 0")
        if self.lr_decay_steps > 0 and not 0 < self.lr_decay_steps <= self.max_steps:
            raise ConfigError(f"lr_decay_steps={self.lr_decay_steps} needs max_steps >= lr_decay_steps (the cooldown "
                              f"ends at max_steps; max_steps={self.max_steps})")
        if self.max_time is not None:
            parts = str(self.max_time).split(":")
            if len(parts) != 4 or not all(p.isdigit() for p in parts):
                raise ConfigError(f"max_time={self.max_time!r}: expected DD:HH:MM:SS, e.g. 00:00:08:30")
        if self.max_epochs < 1 and self.max_steps < 1:
            raise ConfigError("set max_epochs >= 1 or max_steps >= 1")


@dataclass
class PredictorTrainConfig(TrainConfig):
    """InstructPix2Pix training of the FramePredictor UNet (VAE and text encoder frozen).

    drop_*_prob: conditioning dropout of the paper (5% text only, 5% image only, 5% both), which is what makes
        dual classifier-free guidance possible at inference.
    target: set the model's diffusion target (``frame`` | ``residual``, see PredictorConfig) for this run; None
        keeps the one of ``model`` (a preset: ``frame``). Switching a saved model fine-tunes it to the new target.
    crop: how a camera frame is mapped onto the model's square (``center`` crop, ``resize`` = the whole field of
        view squeezed, ``pad``); set on the model for this run (inference uses the same); None keeps the model's
        own (a preset: ``center``). ``resize`` lets the model predict everything the camera sees, so the frame it
        publishes has no pasted-in crop and no seam.
    motion_loss_weight: lambda of the motion-constraint loss: the per-element eps MSE is weighted by
        1 + lambda * m, where m in [0, 1] is the fraction of changed pixels (input->target difference above
        ``motion_threshold`` of 255) in each latent cell, dilated by one latent cell; the weighted mean is
        normalised by the mean weight so lambda moves emphasis, not the learning rate. 0 = plain IP2P loss, the
        default: it won the lambda 0/2/5 ablation on our simulated tasks (weights/MODEL_CARD.md).
    text_pooling: give the UNet the pooled-instruction pathway into its timestep embedding
        (frameplan_core.predictor.model.add_text_pooling) if the model lacks it; a model that has it keeps it.
    full_resolution_attention: give the UNet cross-attention to the instruction at its highest-resolution level too
        (frameplan_core.predictor.model.add_full_resolution_attention; new attention starts as identity) if the
        model lacks it; a model that has it keeps it.
    high_noise_prob, high_noise_min_t: each sample's timestep is drawn from [high_noise_min_t, T) with this
        probability, else from [0, T). Where the noisy target still shows nothing, only the conditioning tells
        which future to draw (which arm starts a handover): a word that decides the layout is learned from those
        timesteps alone, and uniform draws give them a small share (0 = uniform, the default).
    loss_weighting: ``eps`` (default) weighs every timestep's eps error alike, which values an error in the
        predicted frame at high noise by only SNR(t) (0.005 at t=999): the layout the sampler decides there, e.g.
        which arm moves, barely enters the loss. ``v`` weighs
        each sample's eps error by min(1/alpha_bar_t, ``loss_weight_cap``), the v-prediction loss of an eps model
        (Salimans & Ho 2022) capped, divided by its mean over t so the learning rate keeps its meaning. (It did not
        make the handover predictor read the giver; data did: docs/eval/closed_loop.md, "fourth attempt".)
    text_noise: conditioning augmentation: each training sample's instruction states get Gaussian noise of this
        many times their RMS over the sentence's tokens (0 = off, the default), so wordings whose states lie near,
        not on, the training ones (paraphrases never trained on) steer the UNet as their neighbours do. Dropped
        (empty) text and padding get none.
    """

    drop_text_prob: float = 0.05
    drop_image_prob: float = 0.05
    drop_both_prob: float = 0.05
    target: Literal["frame", "residual"] | None = None
    crop: Literal["center", "resize", "pad"] | None = None
    motion_loss_weight: float = 0.0
    motion_threshold: int = 25
    text_pooling: bool = False
    full_resolution_attention: bool = False
    high_noise_prob: float = 0.0
    high_noise_min_t: int = 800
    loss_weighting: Literal["eps", "v"] = "eps"
    loss_weight_cap: float = 20.0
    text_noise: float = 0.0
    sample_text_scale: float = 7.5
    sample_image_scale: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        probs = (self.drop_text_prob, self.drop_image_prob, self.drop_both_prob)
        if min(probs) < 0 or sum(probs) > 1:
            raise ConfigError(f"conditioning dropout probabilities {probs}: each >= 0 and sum <= 1")
        if self.crop not in (None, "center", "resize", "pad"):
            raise ConfigError(f"crop={self.crop!r}: expected center, resize, pad or null")
        if self.motion_loss_weight < 0:
            raise ConfigError(f"motion_loss_weight={self.motion_loss_weight}: must be >= 0")
        if not 0 <= self.motion_threshold < 255:
            raise ConfigError(f"motion_threshold={self.motion_threshold}: must be in 0..254")
        if not 0.0 <= self.high_noise_prob <= 1.0:
            raise ConfigError(f"high_noise_prob={self.high_noise_prob}: a probability, must be in [0, 1]")
        if self.high_noise_min_t < 0:
            raise ConfigError(f"high_noise_min_t={self.high_noise_min_t}: must be >= 0")
        if self.loss_weighting not in ("eps", "v"):
            raise ConfigError(f"loss_weighting={self.loss_weighting!r}: expected eps or v")
        if not 0.0 <= self.text_noise <= 10.0:
            raise ConfigError(f"text_noise={self.text_noise}: a multiple of the text states' RMS, must be in [0, 10]")
        if not self.loss_weight_cap >= 1:
            raise ConfigError(f"loss_weight_cap={self.loss_weight_cap}: must be >= 1 (1/alpha_bar starts at 1)")


@dataclass
class PlannerTrainConfig(TrainConfig):
    """LoRA training of the GridPlanner with the flow-matching loss (base transformer frozen).

    drop_text_prob: fraction of samples trained trajectory-only (empty instruction);
    drop_trajectory_prob: fraction trained text-only (plain first frame); drop_both_prob: neither (image only).
    Samples whose episode has no end-effector track keep their draw without the trajectory: "both" becomes
    text-only and "trajectory" becomes neither (image only), so the text dropout rate stays as configured.
    lora_rank: None keeps the planner config's rank (tiny 16, flux-dev 128); alpha defaults to the rank.
    adapter_name: name of the trained LoRA adapter (saved under ``adapters/<name>``).
    train_base: train the base transformer instead of a LoRA adapter (needed once for the embedded ``tiny``
        model, whose base starts random; a real FLUX base is only ever LoRA-trained).
    condition: set how the planner is conditioned (``first_cell`` | ``tiled`` | ``channel``, see PlannerConfig) for
        this run; None keeps the one of ``model`` (a preset: ``first_cell``). The data stays in the seed's layout.
        Switching a model into ``channel`` adds input weights to the base transformer, so it needs ``train_base``.
    target: set the planner's generation target (``grid`` | ``residual``, see PlannerConfig); None keeps the model's.
    trajectory_marks: set PlannerConfig.trajectory_marks (each tiled cell marks where the path is at its time);
        None keeps the model's. The data pipeline then builds the marked source grids.
    residual_base: set PlannerConfig.residual_base (``condition`` | ``observation``); None keeps the model's.
    """

    drop_text_prob: float = 0.2
    drop_trajectory_prob: float = 0.3
    drop_both_prob: float = 0.05
    lora_rank: int | None = None
    lora_alpha: float | None = None
    adapter_name: str = "default"
    train_base: bool = False
    condition: Literal["first_cell", "tiled", "channel"] | None = None
    target: Literal["grid", "residual"] | None = None
    trajectory_marks: bool | None = None
    residual_base: Literal["condition", "observation"] | None = None
    sample_guidance: float = 3.5
    image_size: int = 64
    crop_res: int = 64
    crop_min_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        probs = (self.drop_text_prob, self.drop_trajectory_prob, self.drop_both_prob)
        if min(probs) < 0 or sum(probs) > 1:
            raise ConfigError(f"modality dropout probabilities {probs}: each >= 0 and sum <= 1")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ConfigError(f"lora_rank={self.lora_rank}: must be >= 1")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ConfigError(f"lora_alpha={self.lora_alpha}: must be > 0 (the adapter is scaled by alpha / rank)")


@dataclass
class VAETrainConfig(TrainConfig):
    """Reconstruction training of the tiny ÷8 AutoencoderKL on simulated frames (no perceptual/GAN term):
    L1 + ``mse_weight`` x MSE on pixels in [-1, 1] plus ``kl_weight`` x KL of the posterior.

    train_encoder: False trains the decoder only: the latents (and the scaling factor) stay exactly as they were, so
        a predictor or planner trained on this VAE's latents keeps working and only decodes sharper.
    crop: how frames are mapped onto the square (``center``, ``resize`` = the whole field of view, ``pad``); None
        keeps the owner model's own."""

    kl_weight: float = 1e-6
    mse_weight: float = 1.0
    train_encoder: bool = True
    crop: Literal["center", "resize", "pad"] | None = None
    lr: float = 4e-4
    warmup_steps: int = 100
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_weight < 0 or self.mse_weight < 0:
            raise ConfigError("kl_weight and mse_weight must be >= 0")
        if self.crop not in (None, "center", "resize", "pad"):
            raise ConfigError(f"crop={self.crop!r}: expected center, resize, pad or null")


@dataclass
class PolicyTrainConfig(TrainConfig):
    """Behaviour cloning of the goal-conditioned policy (frameplan_core.policy) on collected episodes with hindsight
    goals; the same run with ``goal: false`` trains the no-foresight baseline on the same data.

    model: ``tiny`` (random start) or a saved policy folder to continue (its goal/chunk/action must match).
    goal: goal frame stacked on the input (False = the no-foresight baseline).
    chunk: future commands predicted per step; action: ``delta`` (joint targets relative to the measured joints) or
        ``absolute`` (PolicyConfig); interval: hindsight goals are 1..interval saved frames ahead (uniform), or the
        end of the current step's segment with probability ``segment_prob``; validation uses exactly ``interval``.
    image_size: the policy's input side (frames squeezed whole: ``crop`` resize); crop_res is kept equal to it.
    cache: where the uint8 frame cache is built when --data holds RoboTwin episodes (default ``<out>/data``); a
        second run (the baseline) pointed at the same cache reuses it. --data may also be a cache folder itself.
    val_fraction: episodes per task held out for the validation loss (by episode).
    tasks: train on these tasks only (None = every task in the data).
    shift: random translation of each image by up to this many pixels (pad by edge replication, then crop).
    goal_blur_prob: the goal frame is blurred (sigma 0.5-1.5 px) with this probability, so predicted (smoother)
        goals are not out of distribution. state_noise: Gaussian noise (rad) added to the input joint angles.
    gripper_loss_weight: weight of the gripper BCE beside the smooth-L1 of the normalised joint actions.
    goal_dropout: probability of replacing the goal by the no-goal token (frameplan_core.policy.config.NO_GOAL),
        so the same network also acts without a goal and can blend both (PolicyConfig.guidance); 0 = never.
    onset_frames, onset_repeat: the first ``onset_frames`` saved frames of every step segment (and of the episode)
        are drawn ``onset_repeat`` times per epoch instead of once (PolicySamples.onsets); 1 = uniform.
    """

    model: str = "tiny"
    goal: bool = True
    goal_dropout: float = 0.0
    chunk: int = 8
    action: Literal["delta", "absolute"] = "delta"
    interval: int = 50
    segment_prob: float = 0.2
    onset_frames: int = 8
    onset_repeat: int = 1
    camera: str = "head_camera"
    crop: Literal["center", "resize", "pad"] = "resize"
    cache: str | None = None
    val_fraction: float = 0.1
    tasks: list[str] | None = None
    shift: int = 4
    goal_blur_prob: float = 0.3
    state_noise: float = 0.01
    gripper_loss_weight: float = 1.0
    image_size: int = 96
    crop_res: int = 96
    crop_min_scale: float = 1.0
    color_jitter: float = 0.1
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 500
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    max_epochs: int = 1000
    max_steps: int = 20000
    val_every_n_steps: int = 1000
    limit_val_batches: int = 20
    sample_every_n_steps: int = 2000
    checkpoint_every_n_steps: int = 1000
    export_fp16: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop_res != self.image_size:
            raise ConfigError(f"crop_res={self.crop_res}: the policy takes whole frames; set it equal to image_size="
                              f"{self.image_size} (or leave it out)")
        if self.image_size % 16 or not 32 <= self.image_size <= 512:
            raise ConfigError(f"image_size={self.image_size}: must be a multiple of 16 in [32, 512]")
        if not 0.0 <= self.goal_dropout < 1.0:
            raise ConfigError(f"goal_dropout={self.goal_dropout}: must be in [0, 1)")
        if self.goal_dropout and not self.goal:
            raise ConfigError("goal_dropout needs goal: true (the no-foresight baseline has no goal to drop)")
        for name in ("chunk", "interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        for name in ("segment_prob", "goal_blur_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: a probability, must be in [0, 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction}: must be in [0, 1)")
        if self.onset_frames < 0 or self.onset_repeat < 1:
            raise ConfigError(f"onset_frames={self.onset_frames}, onset_repeat={self.onset_repeat}: need onset_frames "
                              ">= 0 and onset_repeat >= 1 (1 = every sample drawn equally often)")
        if self.shift < 0 or self.state_noise < 0 or self.gripper_loss_weight < 0:
            raise ConfigError("shift, state_noise and gripper_loss_weight must be >= 0")


CONFIG_CLASSES: dict[str, type[TrainConfig]] = {
    "predictor": PredictorTrainConfig,
    "planner": PlannerTrainConfig,
    "vae": VAETrainConfig,
    "policy": PolicyTrainConfig,
}


def load_train_config(kind: str, path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load the YAML for ``kind`` (predictor | planner | vae) with ``key=value`` overrides; no file = defaults."""
    if kind not in CONFIG_CLASSES:
        raise ConfigError(f"unknown model family {kind!r}; expected one of {list(KINDS)}")
    cls = CONFIG_CLASSES[kind]
    data = cfgmod.load_yaml(path) if path is not None else {}
    for item in overrides or []:
        cfgmod.apply_override(data, item)
    return cfgmod.from_dict(cls, data, str(path) if path is not None else f"{kind} config")

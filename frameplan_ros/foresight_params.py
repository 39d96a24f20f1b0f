"""Every parameter of the foresight node, in one dataclass (defaults deployed in config/foresight.yaml), where a
``model`` may come from (``model_roots``), and why a value set at run time is refused (``parameter_refusal``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from frameplan_ros.params import param, validate

MODES = ("predictor", "planner", "policy")
TRIGGERS = ("on_instruction", "continuous")
DEVICES = ("auto", "cpu", "cuda")  # "cuda:N" accepted too
QOS_CHOICES = ("sensor_data", "reliable")
OUTPUT_SIZES = ("model", "input")
MAX_CHAIN = 8  # chained grids per plan: 8 * MAX_CHAIN + 1 frames go out at once on plan/frames

# Parameters that need the model to be reloaded when they change at run time.
MODEL_PARAMS = ("mode", "model", "device", "policy", "policy_goal")
# Preset names `model` may give instead of a path (the predictor's and the planner's; a test keeps them equal to
# the core's lists, which are not imported here: they pull in diffusers, slow and not thread-safe to import from a
# parameter callback while the worker thread imports it too)
PRESET_MODELS = ("tiny", "tiny-clip", "sd15", "flux-dev")


@dataclass
class ForesightParams:
    mode: str = param("predictor", "predictor: one future frame per trigger; planner: a 9-frame 3x3 grid plan; "
                      "policy: a goal frame and the goal-conditioned policy's joint targets (JointTrajectory)",
                      choices=MODES)
    model: str = param("", "checkpoint folder or preset name (policy mode: of the goal model, policy_goal); empty = "
                       "the embedded default model of the mode. At run time only folders under model_roots (or the "
                       "model the node started with) are accepted")
    model_roots: str = param("", "folders (':'-separated) whose checkpoints `model` may name at run time; empty = "
                             "the embedded models and the user model folder ($FRAMEPLAN_MODEL_DIR, else "
                             "~/.cache/frameplan/models)", read_only=True)
    device: str = param("auto", "torch device: auto (CUDA when available), cpu, cuda, cuda:N",
                        choices=DEVICES)
    trigger: str = param("on_instruction", "on_instruction: one run per new instruction on the latest frame; "
                         "continuous: run as fast as the model allows on the newest frame", choices=TRIGGERS)
    steps: int = param(0, "sampling steps; 0 = the model's default", range=(0, 1000))
    samples: int = param(0, "samples averaged per prediction or plan (the expected frame; about N times the work); "
                         "0 = the model's default", range=(0, 64))
    seed: int = param(0, "sampling seed (same input + seed = same output); -1 = a new random seed each run",
                      range=(-1, 2**31 - 1))
    output_size: str = param("input", "predicted image size: input (camera resolution) or model (native)",
                             choices=OUTPUT_SIZES)
    chain: int = param(1, "planner: number of chained 3x3 grids (8k+1 frames)", range=(1, MAX_CHAIN))
    default_instruction: str = param("", "instruction used before any arrives on the instruction topic "
                                     "(continuous trigger); empty = wait for one")
    max_instruction_chars: int = param(512, "longer instructions are refused (reported, previous one kept)",
                                       range=(1, 100000))
    image_topic: str = param("/camera/camera/color/image_raw", "colour image (rgb8, bgr8, rgba8, bgra8, mono8)",
                             read_only=True)
    camera_info_topic: str = param("/camera/camera/color/camera_info",
                                   "intrinsics of the colour camera (needed to project trajectories)", read_only=True)
    instruction_topic: str = param("/frameplan/instruction", "std_msgs/String instructions", read_only=True)
    trajectory_topic: str = param("/frameplan/trajectory", "nav_msgs/Path in the camera optical frame (planner)",
                                  read_only=True)
    output_prefix: str = param("/frameplan", "namespace of every output topic", read_only=True)
    use_camera_info: bool = param(True, "subscribe to camera_info", read_only=True)
    camera_qos: str = param("sensor_data", "camera subscriptions: sensor_data (best effort, depth 5) or reliable "
                            "(bag replay)", choices=QOS_CHOICES, read_only=True)
    output_queue_depth: int = param(10, "KEEP_LAST depth of the reliable output publishers (plan/frames keeps at "
                                    "least a whole plan of the longest chain: 8 x 8 + 1 = 65)",
                                    range=(9, 1000), read_only=True)
    warmup: bool = param(True, "run one 1-step inference right after loading, so the first real frame is not "
                         "slowed by lazy initialisation")
    publish_comparison: bool = param(True, "publish input | prediction side by side on comparison")
    publish_uncertainty: bool = param(True, "publish uncertainty (32FC1 grey levels, NaN = no estimate), confidence "
                                      "and a heat-map panel on comparison; needs samples >= 2 (the embedded models "
                                      "default to 4); the predictor's map costs one extra VAE decode")
    uncertainty_heatmap_max: float = param(32.0, "uncertainty (grey levels) shown as the hottest colour of the "
                                           "comparison heat map", range=(0.1, 255.0))
    plan_frame_stamp_step: float = param(0.001, "plan/frames: frame k is stamped source stamp + k * this (s)",
                                         range=(1e-9, 10.0))
    diagnostics_period: float = param(1.0, "seconds between /diagnostics messages", range=(0.05, 60.0))
    shutdown_timeout: float = param(10.0, "seconds to wait for a running inference at shutdown", range=(0.0, 600.0))
    lifecycle: bool = param(False, "true: a managed node that starts unconfigured (configure loads the model, "
                            "activate starts processing, deactivate stops it, cleanup frees it, shutdown exits); "
                            "false: configures and activates itself at start", read_only=True)
    image_transport: str = param("raw", "raw: sensor_msgs/Image on image_topic; compressed: "
                                 "sensor_msgs/CompressedImage (jpeg or png) on <image_topic>/compressed",
                                 choices=("raw", "compressed"), read_only=True)
    policy: str = param("", "policy mode: GoalPolicy folder or embedded name (tiny, tiny-nogoal, hammer, "
                        "handover, stack, and their -nogoal); empty = the embedded tiny. At run time checked against model_roots "
                        "like model")
    policy_goal: str = param("predictor", "policy mode: what makes the goal frames: the frame predictor, or the "
                             "grid planner's plan followed subgoal by subgoal", choices=("predictor", "planner"))
    policy_period: float = param(0.24, "policy mode: a new JointTrajectory every this many seconds of camera time "
                                 "(policy steps of 60 ms; 0.24 = frameplan rollout --execute 4)", range=(0.001, 60.0))
    goal_period: float = param(0.6, "policy mode, predictor goals: a new goal frame every this many seconds of "
                               "camera time (0.6 = frameplan rollout --period 10)", range=(0.001, 3600.0))
    policy_gripper: str = param("binary", "policy mode: binary sends gripper commands 0/1 (threshold 0.5), "
                                "continuous the predicted opening", choices=("binary", "continuous"))
    subgoal_steps: int = param(0, "policy mode, planner goals: policy steps per subgoal; 0 = 1.5 x the mean expert "
                               "episode / 8 (as frameplan rollout)", range=(0, 100000))
    joint_states_topic: str = param("/joint_states", "policy mode: sensor_msgs/JointState with left_panda_joint1..7, "
                                    "left_gripper, right_... (other joints ignored)", read_only=True)
    joint_state_tolerance: float = param(0.05, "policy mode: max |stamp difference| (s) to pair a joint state with "
                                         "a camera frame", range=(0.0, 10.0))
    command_topic: str = param("/frameplan/joint_trajectory", "policy mode: trajectory_msgs/JointTrajectory output "
                               "(stamped with the camera frame it was computed from)", read_only=True)


def user_model_dir() -> Path:
    """The user's model folder: $FRAMEPLAN_MODEL_DIR, else ``models`` in the frameplan cache folder
    ($FRAMEPLAN_CACHE, else ~/.cache/frameplan)."""
    d = os.environ.get("FRAMEPLAN_MODEL_DIR") or Path(os.environ.get("FRAMEPLAN_CACHE") or
                                                      Path.home() / ".cache" / "frameplan") / "models"
    return Path(d).expanduser()


def resolve_model_roots(value: str) -> list[Path]:
    """The folders of a ``model_roots`` value (empty: the embedded models folder and ``user_model_dir()``),
    symlinks resolved, so that containment is checked on real paths."""
    import frameplan_core

    parts = [p for p in value.split(os.pathsep) if p.strip()] if value.strip() else [
        Path(frameplan_core.__file__).resolve().parent / "weights", user_model_dir()]
    return [Path(os.path.realpath(Path(p).expanduser())) for p in parts]


def model_outside_roots(value: str, roots: list[Path], trusted: str = "") -> bool:
    """True when the ``model`` value names a path outside every root (and is not the ``trusted`` model the node
    started with). Decided on the path alone: realpath follows the symlinks there are (a link inside a root to
    /etc is outside) and resolves the rest lexically; nothing is opened or loaded, and a refusal reads the same
    whether or not the path exists."""
    real = Path(os.path.realpath(Path(value).expanduser()))
    if trusted and real == Path(os.path.realpath(Path(trusted).expanduser())):
        return False
    return not any(real.is_relative_to(root) for root in roots)


def instruction_refusal(text: str, where: str) -> str | None:
    """Why an instruction given as a parameter would be refused by the model (empty = none given: fine)."""
    from frameplan_core.errors import InputError
    from frameplan_core.text import validate_instruction

    if not text.strip():
        return None
    try:
        validate_instruction(text, where)
    except InputError as exc:
        return str(exc)
    return None


def is_preset(value: str) -> bool:
    """A preset name (``tiny``...) rather than a path: loads the embedded or a named model, no file of the caller's."""
    return value in PRESET_MODELS and not os.path.lexists(value)


def model_refusal(value: str, roots: list[Path], trusted: str) -> str | None:
    """Why a run-time ``model`` value is refused: a path outside ``model_roots`` is refused on its name alone,
    before anything there is looked at (remote callers must not learn what exists where)."""
    from frameplan_core.errors import one_line

    if not value or is_preset(value):
        return None
    if model_outside_roots(value, roots, trusted):
        return (f"model={one_line(value, 200)!r}: outside model_roots ({os.pathsep.join(map(str, roots))}); put the "
                "checkpoint under one of them, or start the node with a model_roots that holds it")
    if not Path(value).expanduser().exists():
        return f"model={one_line(value, 200)!r}: no such checkpoint folder"
    return None


def device_refusal(value: str) -> str | None:
    """Why a ``device`` cannot be used on this machine (CUDA asked for, none there)."""
    if not str(value).startswith("cuda"):
        return None
    try:
        import torch
    except ImportError:
        return "device: torch is not importable"
    return None if torch.cuda.is_available() else f"device={value!r}: CUDA is not available on this machine"


def parameter_refusal(name: str, value: object, changing: set[str], *, roots: list[Path], start_model: str,
                      start_policy: str, model: object = None, kind: str | None = None) -> str | None:
    """Why a run-time change of parameter ``name`` to ``value`` is refused (None: accepted). ``changing``: every
    name set in the same call; ``roots``: the resolved model_roots; ``start_model``/``start_policy``: what the node
    was launched with (trusted); ``model``/``kind``: the loaded model, against which a new ``steps`` is checked
    unless the model changes in the same call (a new model is checked when it loads)."""
    reason = validate(ForesightParams, name, value)
    if reason is None and name == "model":
        reason = model_refusal(str(value), roots, start_model)
    elif reason is None and name == "policy":
        from frameplan_ros.policy_runner import policy_refusal

        reason = policy_refusal(str(value), roots, start_policy)
    elif reason is None and name == "default_instruction":
        reason = instruction_refusal(str(value), "default_instruction")
    elif reason is None and name == "steps" and not changing & set(MODEL_PARAMS):
        from frameplan_core.models import steps_refusal

        reason = steps_refusal(model, kind, int(value))
    elif reason is None and name == "device":
        reason = device_refusal(str(value))
    return reason

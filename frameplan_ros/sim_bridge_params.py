"""Every parameter of the sim bridge, in one dataclass (defaults deployed in config/sim_bridge.yaml), and the
recorded frame rate a replay runs at by default (``replay_rate: 0``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from frameplan_core.errors import DataError
from frameplan_ros.params import param

# RoboTwin 1.0 saves every 15th step of a 1/250 s simulation (task config save_freq): 16.7 frames per second.
ROBOTWIN_RECORDED_RATE = 250.0 / 15.0


@dataclass
class SimBridgeParams:
    source: str = param("sim", "sim: run the task's scripted expert live; replay: publish a recorded episode",
                        choices=("sim", "replay"), read_only=True)
    task: str = param("blocks_stack_easy", "SAPIEN task (block_hammer_beat, block_handover, blocks_stack_easy)",
                      read_only=True)
    seed: int = param(0, "seed of the first episode; each following episode uses the next seed",
                      range=(0, 2**31 - 1), read_only=True)
    camera_type: str = param("D435", "RoboTwin camera type (D435 320x240, L515, Large_D435 640x480)",
                             choices=("D435", "L515", "Large_D435", "Large_L515"), read_only=True)
    camera: str = param("head_camera", "which simulated/recorded camera to publish", read_only=True)
    rate: float = param(10.0, "publish rate in Hz for the live sim (upper bound: rendering speed)",
                        range=(0.1, 120.0))
    episode: str = param("", "replay: a RoboTwin 1.0 episode<N>/ folder or a 2.0 episode<N>.hdf5", read_only=True)
    replay_rate: float = param(0.0, "replay rate in Hz; 0 = the recorded rate (scene info, else RoboTwin's "
                               "250/15 Hz)", range=(0.0, 1000.0))
    loop: bool = param(True, "sim: episode after episode (new seed each); replay: start again at the end")
    max_episodes: int = param(0, "stop publishing after this many episodes; 0 = no limit", range=(0, 1000000))
    frame_id: str = param("camera_color_optical_frame", "header.frame_id of every camera message", read_only=True)
    camera_namespace: str = param("/camera/camera", "realsense2_camera-style namespace of the camera topics",
                                  read_only=True)
    instruction_topic: str = param("/frameplan/instruction", "where instructions are published", read_only=True)
    publish_depth: bool = param(True, "publish aligned depth (16UC1, mm) and its camera_info", read_only=True)
    camera_qos: str = param("sensor_data", "camera publishers: sensor_data (best effort) or reliable",
                            choices=("sensor_data", "reliable"), read_only=True)
    wait_for_subscribers: int = param(0, "before the first frame, wait until every camera topic has this many "
                                      "subscribers (tests, recording)", range=(0, 100), read_only=True)
    diagnostics_period: float = param(1.0, "seconds between /diagnostics messages", range=(0.05, 60.0))
    control: str = param("expert", "sim: who drives the arms; expert: the task's scripted expert; command: "
                         "trajectory_msgs/JointTrajectory on command_topic (a simulated robot)",
                         choices=("expert", "command"), read_only=True)
    command_topic: str = param("/frameplan/joint_trajectory", "control: command: JointTrajectory input (joint names "
                               "left_panda_joint1..7, left_gripper, right_...; docs/ROS.md)", read_only=True)
    command_timeout: float = param(1.0, "control: command: when no command arrived for this many seconds while a "
                                   "trajectory is followed, the arms stop where they are; 0 = never",
                                   range=(0.0, 3600.0))
    max_ticks: int = param(6000, "control: command: an episode ends at success or after this many physics ticks "
                           "(1/250 s each; 6000 = 24 s simulated)", range=(1, 10_000_000), read_only=True)
    joint_states_topic: str = param("/joint_states", "sim: sensor_msgs/JointState of both arms with every frame",
                                    read_only=True)
    success_topic: str = param("/frameplan/task_success", "sim: std_msgs/Bool, the task's success check, with "
                               "every frame", read_only=True)
    clock: str = param("wall", "sim: stamps from the wall clock, or sim: simulated time (also published on /clock, "
                       "for nodes with use_sim_time)", choices=("wall", "sim"), read_only=True)
    command_markers_topic: str = param("/frameplan/command_markers", "control: command: each accepted trajectory's "
                                       "tool paths (forward kinematics) as a MarkerArray in the camera frame, for rviz",
                                       read_only=True)
    publish_compressed: bool = param(False, "also publish the colour image as sensor_msgs/CompressedImage on "
                                     "<color topic>/compressed (image_transport's compressed transport)",
                                     read_only=True)
    compressed_format: str = param("jpeg", "compressed image format", choices=("jpeg", "png"))
    jpeg_quality: int = param(90, "JPEG quality of the compressed image", range=(1, 100))


def recorded_rate(reader: Any) -> float:
    """Frames per second an episode was recorded at: scene info 'fps', else save_freq x sim timestep, else
    RoboTwin's default."""
    info = {}
    try:
        info = reader.scene_info or {}
    except (DataError, NotImplementedError, AttributeError):
        info = {}
    if isinstance(info, dict):
        if float(info.get("fps", 0) or 0) > 0:
            return float(info["fps"])
        if float(info.get("save_freq", 0) or 0) > 0 and float(info.get("timestep", 0) or 0) > 0:
            return 1.0 / (float(info["save_freq"]) * float(info["timestep"]))
    return ROBOTWIN_RECORDED_RATE


__all__ = ["ROBOTWIN_RECORDED_RATE", "SimBridgeParams", "recorded_rate"]

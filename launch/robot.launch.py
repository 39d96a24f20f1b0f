"""Foresight for a live RealSense: the foresight node (plus, optionally, realsense2_camera and rviz2).

    ros2 launch frameplan_ros robot.launch.py device:=cuda realsense:=true
    ros2 launch frameplan_ros robot.launch.py image_topic:=/my_cam/color/image_raw camera_info_topic:=...
    ros2 launch frameplan_ros robot.launch.py image_transport:=compressed    # a camera streamed over a network
    ros2 launch frameplan_ros robot.launch.py lifecycle:=true               # managed: ros2 lifecycle set ...

The node subscribes to realsense2_camera's default topics; the *_topic arguments remap them to another camera.
realsense2_camera's own rs_launch.py is included (with aligned depth) when realsense:=true and it is installed.
"""
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    IncludeLaunchDescription,
    LogInfo,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "frameplan_ros"
DEFAULT_TOPICS = {
    "image_topic": "/camera/camera/color/image_raw",
    "camera_info_topic": "/camera/camera/color/camera_info",
    "instruction_topic": "/frameplan/instruction",
    "trajectory_topic": "/frameplan/trajectory",
}


def _realsense_installed():
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        return False
    try:
        get_package_share_directory("realsense2_camera")
        return True
    except PackageNotFoundError:
        return False


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    arg = LaunchConfiguration
    args = [
        DeclareLaunchArgument("mode", default_value="predictor", choices=["predictor", "planner"]),
        DeclareLaunchArgument("trigger", default_value="on_instruction", choices=["on_instruction", "continuous"]),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("model", default_value="", description="checkpoint folder; empty = embedded model"),
        DeclareLaunchArgument("camera_qos", default_value="sensor_data", choices=["sensor_data", "reliable"]),
        DeclareLaunchArgument("image_transport", default_value="raw", choices=["raw", "compressed"],
                              description="compressed: subscribe to <image_topic>/compressed (jpeg or png)"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="a managed node: starts unconfigured, `ros2 lifecycle set` drives it"),
        DeclareLaunchArgument("realsense", default_value="false", choices=["true", "false"],
                              description="also start realsense2_camera (rs_launch.py, aligned depth)"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"]),
        DeclareLaunchArgument("shm", default_value="true", choices=["true", "false"]),
    ] + [DeclareLaunchArgument(k, default_value=v, description=f"remap {v}") for k, v in DEFAULT_TOPICS.items()]
    actions = [
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", PathJoinSubstitution([share, "config", "fastdds_shm.xml"]),
                               condition=IfCondition(arg("shm"))),
        Node(package=PACKAGE, executable="foresight_node", name="foresight_node", output="screen",
             parameters=[PathJoinSubstitution([share, "config", "foresight.yaml"]),
                         {"mode": arg("mode"), "trigger": arg("trigger"), "device": arg("device"),
                          "model": ParameterValue(arg("model"), value_type=str), "camera_qos": arg("camera_qos"),
                          "image_transport": arg("image_transport"),
                          "lifecycle": ParameterValue(arg("lifecycle"), value_type=bool)}],
             remappings=[(v, arg(k)) for k, v in DEFAULT_TOPICS.items()]
             + [(DEFAULT_TOPICS["image_topic"] + "/compressed", [arg("image_topic"), "/compressed"])]),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
             arguments=["-d", PathJoinSubstitution([share, "config", "frameplan.rviz"])],
             condition=IfCondition(arg("rviz"))),
    ]
    if _realsense_installed():
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("realsense2_camera"), "launch",
                                                                "rs_launch.py"])),
            launch_arguments={"align_depth.enable": "true"}.items(), condition=IfCondition(arg("realsense"))))
    else:
        actions.append(LogInfo(msg="realsense2_camera is not installed: realsense:=true has no effect; start your "
                                   "camera driver separately", condition=IfCondition(arg("realsense"))))
    return LaunchDescription(args + actions)

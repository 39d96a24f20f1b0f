"""Simulated robot with live foresight: SAPIEN sim bridge + foresight node + rviz2.

    ros2 launch frameplan_ros sim.launch.py task:=block_hammer_beat mode:=planner device:=cuda
    ros2 launch frameplan_ros sim.launch.py mode:=policy policy:=/path/to/policy     # closed loop
    ros2 launch frameplan_ros sim.launch.py control:=command                         # your own controller

Both nodes read their parameters from config/*.yaml; the launch arguments override the few that are chosen per
run. ``mode:=policy`` closes the loop: the foresight node publishes the goal-conditioned policy's JointTrajectory
and the sim bridge follows it (``control`` then defaults to ``command``), both on the simulated clock
(``/clock``, use_sim_time). ``control:=command`` alone makes the bridge a simulated robot for any controller.
``lifecycle:=true`` starts the foresight node as a managed node (``ros2 lifecycle set /foresight_node configure``).
Large images go over shared memory (config/fastdds_shm.xml) unless shm:=false.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from frameplan_core.sim.task_config import TASK_NAMES

PACKAGE = "frameplan_ros"


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    arg = LaunchConfiguration
    # control: "auto" = command in policy mode, else the scripted expert
    control = PythonExpression(["'command' if '", arg("control"), "' == 'command' or ('", arg("control"),
                                "' == 'auto' and '", arg("mode"), "' == 'policy') else 'expert'"])
    sim_time = PythonExpression(["'", arg("mode"), "' == 'policy' or '", arg("control"), "' == 'command'"])
    args = [
        DeclareLaunchArgument("task", default_value="blocks_stack_easy", choices=list(TASK_NAMES),
                              description="SAPIEN task the sim bridge runs"),
        DeclareLaunchArgument("mode", default_value="predictor", choices=["predictor", "planner", "policy"],
                              description="foresight: future frame, 3x3 grid plan, or goal frame + policy commands"),
        DeclareLaunchArgument("control", default_value="auto", choices=["auto", "expert", "command"],
                              description="who drives the simulated arms: the scripted expert or JointTrajectory "
                                          "commands; auto = command with mode:=policy, else expert"),
        DeclareLaunchArgument("trigger", default_value="on_instruction", choices=["on_instruction", "continuous"]),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("model", default_value="", description="checkpoint folder (mode:=policy: of the goal "
                                                                     "model); empty = embedded model"),
        DeclareLaunchArgument("policy", default_value="", description="mode:=policy: GoalPolicy folder; empty = the "
                                                                      "embedded tiny"),
        DeclareLaunchArgument("policy_goal", default_value="predictor", choices=["predictor", "planner"],
                              description="mode:=policy: goal frames from the predictor or the planner's plan"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="start the foresight node as a managed (lifecycle) node, unconfigured"),
        DeclareLaunchArgument("image_transport", default_value="raw", choices=["raw", "compressed"],
                              description="camera input of the foresight node (compressed: the bridge publishes "
                                          "<color topic>/compressed too)"),
        DeclareLaunchArgument("rate", default_value="10.0", description="sim camera rate (Hz)"),
        DeclareLaunchArgument("rviz", default_value="true", choices=["true", "false"]),
        DeclareLaunchArgument("shm", default_value="true", choices=["true", "false"],
                              description="use the Fast DDS shared-memory profile for large images"),
    ]
    compressed = PythonExpression(["'", arg("image_transport"), "' == 'compressed'"])
    return LaunchDescription(args + [
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", PathJoinSubstitution([share, "config", "fastdds_shm.xml"]),
                               condition=IfCondition(arg("shm"))),
        Node(package=PACKAGE, executable="sim_bridge_node", name="sim_bridge", output="screen",
             parameters=[PathJoinSubstitution([share, "config", "sim_bridge.yaml"]),
                         {"source": "sim", "task": arg("task"), "control": control,
                          "clock": PythonExpression(["'sim' if ", sim_time, " else 'wall'"]),
                          "publish_compressed": ParameterValue(compressed, value_type=bool),
                          "rate": ParameterValue(arg("rate"), value_type=float)}]),
        Node(package=PACKAGE, executable="foresight_node", name="foresight_node", output="screen",
             parameters=[PathJoinSubstitution([share, "config", "foresight.yaml"]),
                         {"mode": arg("mode"), "trigger": arg("trigger"), "device": arg("device"),
                          "model": ParameterValue(arg("model"), value_type=str),
                          "policy": ParameterValue(arg("policy"), value_type=str), "policy_goal": arg("policy_goal"),
                          "lifecycle": ParameterValue(arg("lifecycle"), value_type=bool),
                          "image_transport": arg("image_transport"),
                          "use_sim_time": ParameterValue(sim_time, value_type=bool)}]),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
             arguments=["-d", PathJoinSubstitution([share, "config", "frameplan.rviz"])],
             parameters=[{"use_sim_time": ParameterValue(sim_time, value_type=bool)}],
             condition=IfCondition(arg("rviz"))),
    ])

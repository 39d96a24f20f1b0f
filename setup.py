"""frameplan: one distribution that is a pip package and an ament_python ROS 2 package.

ROS 2 wheels from PyPI live in the optional ``ros`` extra only: on a robot the system ROS 2 provides rclpy and
the message packages, and ``colcon build`` (see ros2_ws/README.md) installs this package next to them.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "frameplan_ros"

EXTRAS = {
    # PyPI ROS 2 Kilted wheels, for machines without a system ROS 2 (CI, laptops). Never needed on a robot.
    "ros": [
        "ros-rclpy",
        "ros-std-msgs",
        "ros-sensor-msgs",
        "ros-geometry-msgs",
        "ros-nav-msgs",
        "ros-visualization-msgs",
        "ros-diagnostic-msgs",
        "ros-trajectory-msgs",  # sim bridge commands / policy output (JointTrajectory)
        "ros-lifecycle-msgs",  # the managed foresight node (rclpy.lifecycle)
        "ros-rosgraph-msgs",  # /clock of the sim bridge's simulated time
        "ros-builtin-interfaces",
        "ros-rmw-fastrtps-cpp",
        "mcap-ros2-support",
    ],
    "sim": ["sapien==3.0.3", "mplib==0.2.1"],
    "train": ["lightning>=2.4", "scikit-image>=0.22", "tensorboard"],
    "dev": ["pytest>=8", "pytest-timeout", "ruff", "colcon-common-extensions", "ros-ament-package"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    description="Visual foresight for ROS 2 robots: future-frame prediction and 3x3 grid visual plans",
    license="Apache-2.0",
    python_requires=">=3.10",
    # frameplan_core (libraries), frameplan_ros (nodes), frameplan_cli (the `frameplan` command, its verbs and
    # benchmarks); training/ is installed as frameplan_training, with its subpackages (scripts: `frameplan
    # train/export/eval`)
    packages=find_packages(include=["frameplan_core", "frameplan_core.*", "frameplan_ros", "frameplan_ros.*",
                                    "frameplan_cli", "frameplan_cli.*"])
    + ["frameplan_training"] + [f"frameplan_training.{p}" for p in find_packages("training")],
    package_dir={"frameplan_training": "training"},
    include_package_data=True,
    package_data={
        "frameplan_core": ["presets/*.json", "presets/**/*", "weights/**/*", "sim/**/*.yaml"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        (f"share/{PACKAGE_NAME}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE_NAME}/config", [p for p in glob("config/*") if not p.endswith("/")]),
    ],
    install_requires=[
        # No exact torch pin: the user's CUDA build must be kept. scripts/setup_env.sh installs 2.13.0 first.
        "torch>=2.4",
        "numpy>=1.24",
        "diffusers>=0.35",
        "transformers>=4.40",
        "peft>=0.12",
        "accelerate>=0.30",
        "safetensors>=0.4",
        "opencv-python-headless>=4.8",
        "h5py>=3.8",
        "pyyaml>=6",
        "tqdm>=4.60",
        "pillow>=9",
        "imageio>=2.30",
        "scikit-image>=0.22",
    ],
    extras_require=EXTRAS,
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "frameplan = frameplan_cli.main:main",
            "foresight_node = frameplan_ros.foresight_node:main",
            "sim_bridge_node = frameplan_ros.sim_bridge_node:main",
        ],
    },
)

"""Record the foresight and camera topics to an MCAP file that rosbag2 (``ros2 bag play``) and Foxglove open.

Messages are stored as received (serialized CDR, no decode/re-encode) with ros2msg schemas; each topic is
subscribed with the QoS its publishers offer (best effort for sensor-data cameras, reliable otherwise), and
topics that appear later are picked up while recording. The file is written under a temporary name and renamed
when recording ends (Ctrl-C, --duration or --max-messages), so a reader never sees a truncated file."""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TOPICS = (
    "/camera/camera/color/image_raw",
    "/camera/camera/color/camera_info",
    "/camera/camera/aligned_depth_to_color/image_raw",
    "/frameplan/instruction",
    "/frameplan/predicted_image",
    "/frameplan/comparison",
    "/frameplan/plan/grid",
    "/frameplan/plan/frames",
    "/frameplan/plan/trajectory",
    "/frameplan/plan/trajectory_markers",
    "/diagnostics",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/frameplan.mcap", help="MCAP file to write (default %(default)s)")
    parser.add_argument("--topics", nargs="+", default=list(DEFAULT_TOPICS), metavar="TOPIC",
                        help="topics to record (default: camera + all foresight outputs + /diagnostics)")
    parser.add_argument("--no-camera", action="store_true", help="leave out the /camera/... topics")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to record; 0 = until Ctrl-C")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after this many messages; 0 = no limit")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


class McapRecorder:
    """Subscribes (raw) to topics as they appear and appends their CDR bytes to an MCAP writer."""

    def __init__(self, node, writer, topics: list[str]) -> None:
        self.node, self.writer, self.topics = node, writer, list(topics)
        self.channels: dict[str, int] = {}
        self.schemas: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.total = 0
        self._subs = []

    def discover(self) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from frameplan_ros.msgdef import definition, import_type

        graph = dict(self.node.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self.channels or topic not in graph:
                continue
            type_str = graph[topic][0]
            msg_type = import_type(type_str)
            infos = self.node.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
            if type_str not in self.schemas:
                self.schemas[type_str] = self.writer.register_schema(
                    name=type_str, encoding="ros2msg", data=definition(msg_type).encode("utf-8"))
            self.channels[topic] = self.writer.register_channel(
                topic=topic, message_encoding="cdr", schema_id=self.schemas[type_str],
                metadata={"offered_qos_profiles": "reliable" if reliable else "best_effort"})
            self.counts[topic] = 0
            self._subs.append(self.node.create_subscription(msg_type, topic, self._callback(topic), qos, raw=True))
            self.node.get_logger().info(f"recording {topic} [{type_str}] ({'reliable' if reliable else 'best effort'})")

    def _callback(self, topic: str):
        channel = self.channels[topic]

        def cb(data: bytes) -> None:
            now = self.node.get_clock().now().nanoseconds
            self.writer.add_message(channel_id=channel, log_time=now, data=bytes(data), publish_time=now,
                                    sequence=self.counts[topic])
            self.counts[topic] += 1
            self.total += 1

        return cb


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile
    import time

    import rclpy
    from mcap.writer import Writer
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from frameplan_core.errors import ConfigError

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out}: exists; pass --overwrite to replace it")
    topics = [t for t in args.topics if not (args.no_camera and t.startswith("/camera/"))]
    if not topics:
        raise ConfigError("--topics: nothing to record")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    stream = os.fdopen(fd, "wb")
    writer = Writer(stream)
    writer.start(profile="ros2", library="frameplan record")
    rclpy.init()
    node = rclpy.create_node("frameplan_recorder")
    rec = McapRecorder(node, writer, topics)
    node.create_timer(0.5, rec.discover)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    t0 = time.monotonic()
    print(f"recording {len(topics)} topic(s) to {out} (Ctrl-C to stop)")
    try:
        rec.discover()
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
            if args.duration and time.monotonic() - t0 >= args.duration:
                break
            if args.max_messages and rec.total >= args.max_messages:
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        writer.finish()
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()
        os.replace(tmp, out)
    for topic, n in sorted(rec.counts.items()):
        print(f"  {topic}: {n} message(s)")
    missing = [t for t in topics if t not in rec.channels]
    if missing:
        print(f"  never published: {', '.join(missing)}")
    print(f"wrote {out} ({rec.total} messages)")
    return 0

"""One exception family, so callers (CLI, ROS nodes) can report our errors cleanly and let bugs surface."""


class FrameplanError(Exception):
    """Base class; the message names what was wrong and where (file, topic, field)."""


class DataError(FrameplanError):
    """A data file or dataset is missing, corrupt, or has the wrong layout/shape/dtype."""


class ConfigError(FrameplanError):
    """A config file or parameter is invalid (unknown key, wrong type, out of range)."""


class ModelError(FrameplanError):
    """A checkpoint is missing, of the wrong architecture, or cannot be loaded."""


class InputError(FrameplanError):
    """A runtime input (image, instruction, trajectory) is unusable. ``kind`` names which input and how, in one word
    (``instruction_invalid``, ``bad_encoding``, ``trajectory`` ...): the ROS nodes count and report errors by kind, so
    the raiser, who knows, says it; ``bad_input`` when it does not."""

    def __init__(self, message: object = "", kind: str = "bad_input") -> None:
        super().__init__(message)
        self.kind = kind


class SimError(FrameplanError):
    """The simulator cannot run (no Vulkan device, missing assets) or a scripted episode failed."""


def one_line(text: object, limit: int = 300) -> str:
    """``text`` as one short printable line: whitespace runs (newlines too) become one space, other control
    characters are escaped, and more than ``limit`` characters are cut, saying how long the whole was.

    Why: error and diagnostic messages echo what they were given (a torch error of twenty lines, a 1 MB image
    encoding, an instruction holding terminal escapes); a message must stay one readable line of bounded size."""
    raw = str(text)
    s = " ".join(raw[: 4 * limit].split())  # bounded work however long the input
    if not s.isprintable():
        s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    if len(s) > limit or len(raw) > 4 * limit:
        s = f"{s[:limit]}... ({len(raw)} characters in all)"
    return s

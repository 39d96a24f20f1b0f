"""Which (input frame, target frame, instruction) pairs an episode gives an InstructPix2Pix dataset.

Two kinds of pair (``pairing``):

- ``interval`` (seed 000, the default): frames ``t -> t + interval`` for ``t = 0, stride, 2*stride, ...`` with the
  task-level instruction ("beat the block with the hammer").
- ``segment``: one pair per *motion segment* of the scripted expert, ``start_frame -> end_frame`` with the step
  instruction it announced ("grasp the hammer"), the wording the ROS sim bridge publishes. Segments shorter than
  ``min_segment_frames`` frames (end - start) are skipped.

``both`` gives both kinds; every pair records its kind (``meta.pairing``). Splits are by episode, so an episode's
interval and segment pairs always share a split.

Segments come from the episode's ``scene_info.json`` entry: ``segments: [{step, instruction, start_frame,
end_frame}, ...]``. Episodes collected before the frame span was recorded have only ``{step, instruction}`` (the
physics tick at which the step began); their frames are derived exactly as the collector now records them: start
= ``ceil(step / save_freq)`` (the first saved frame at or after the tick, ``save_freq`` from the same scene_info
entry), clipped to the last frame; end = the next segment's start, the last frame for the last segment. Episodes
without segments (RoboTwin's own data) give no segment pairs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from frameplan_core.data import instructions
from frameplan_core.errors import ConfigError, DataError

PAIRINGS = ("interval", "segment", "both")
DEFAULT_MIN_SEGMENT_FRAMES = 3


@dataclass(frozen=True)
class Segment:
    """One motion segment of an episode, in saved-frame numbers."""

    index: int
    instruction: str
    start_frame: int
    end_frame: int
    step: int | None = None
    derived: bool = False  # frames computed from step / save_freq (an episode collected before fb63e91)

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass(frozen=True)
class PairSpec:
    """A pair to cut from an episode: input frame ``start``, target frame ``end``, its kind, and for a segment pair
    the segment (whose instruction is the step text)."""

    start: int
    end: int
    pairing: str
    segment: Segment | None = None

    def meta(self) -> dict[str, Any]:
        """What a dataset sample records about its pair (``meta.json``)."""
        out: dict[str, Any] = {"pairing": self.pairing}
        if self.segment is not None:
            s = self.segment
            out["segment"] = {"index": s.index, "instruction": s.instruction, "start_frame": s.start_frame,
                              "end_frame": s.end_frame, "frames_derived": s.derived}
        return out


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise DataError(f"{where}: expected an integer, got {value!r:.40}")
    return int(value)


def episode_segments(scene_info: dict | None, n_frames: int, where: str) -> list[Segment]:
    """The motion segments recorded in one episode's scene_info entry (``[]`` when it has none), with frame spans
    checked against the episode's ``n_frames`` or derived for older episodes (see the module docstring)."""
    if not scene_info or not scene_info.get("segments"):
        return []
    raw = scene_info["segments"]
    if not isinstance(raw, list):
        raise DataError(f"{where}: scene_info 'segments' must be a list, got {type(raw).__name__}")
    for i, seg in enumerate(raw):
        if not isinstance(seg, dict) or not isinstance(seg.get("instruction"), str) or not seg["instruction"].strip():
            raise DataError(f"{where}: scene_info segment {i} needs a non-empty 'instruction' string, got {seg!r:.80}")
    last = n_frames - 1
    if all("start_frame" in s and "end_frame" in s for s in raw):
        out = []
        for i, s in enumerate(raw):
            a = _int(s["start_frame"], f"{where}: scene_info segment {i} start_frame")
            b = _int(s["end_frame"], f"{where}: scene_info segment {i} end_frame")
            if not 0 <= a <= b <= last:
                raise DataError(f"{where}: scene_info segment {i} ({s['instruction']!r}) spans frames {a}..{b}, "
                                f"outside the episode's 0..{last} (scene_info does not match the episode)")
            step = _int(s["step"], f"{where}: scene_info segment {i} step") if "step" in s else None
            out.append(Segment(i, s["instruction"].strip(), a, b, step))
        return out
    save_freq = scene_info.get("save_freq")
    if save_freq is None:
        raise DataError(f"{where}: scene_info segments have no start_frame/end_frame and the entry has no "
                        "'save_freq' to derive them from")
    save_freq = _int(save_freq, f"{where}: scene_info save_freq")
    if save_freq < 1:
        raise DataError(f"{where}: scene_info save_freq must be >= 1, got {save_freq}")
    steps = []
    for i, s in enumerate(raw):
        if "step" not in s:
            raise DataError(f"{where}: scene_info segment {i} has neither start_frame/end_frame nor 'step'")
        step = _int(s["step"], f"{where}: scene_info segment {i} step")
        if step < 0:
            raise DataError(f"{where}: scene_info segment {i} step must be >= 0, got {step}")
        steps.append(step)
    starts = [min(last, -(-step // save_freq)) for step in steps]
    return [Segment(i, s["instruction"].strip(), starts[i], starts[i + 1] if i + 1 < len(starts) else last,
                    steps[i], derived=True) for i, s in enumerate(raw)]


def interval_pairs(n_frames: int, interval: int, stride: int | None = None) -> list[PairSpec]:
    """``t -> t + interval`` for ``t = 0, stride, ...`` while ``t + interval < n_frames`` (stride defaults to
    the interval)."""
    return [PairSpec(t, t + interval, "interval") for t in range(0, n_frames - interval, stride or interval)]


def segment_pairs(segments: list[Segment], min_frames: int = DEFAULT_MIN_SEGMENT_FRAMES) -> list[PairSpec]:
    """``start_frame -> end_frame`` of every segment spanning at least ``min_frames`` frames."""
    return [PairSpec(s.start_frame, s.end_frame, "segment", s) for s in segments if s.frames >= min_frames]


def check_options(pairing: str, interval: int, stride: int | None, min_segment_frames: int) -> None:
    if pairing not in PAIRINGS:
        raise ConfigError(f"pairing {pairing!r}: expected one of {', '.join(PAIRINGS)}")
    if interval < 1:
        raise ConfigError(f"interval must be >= 1, got {interval}")
    if stride is not None and stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    if min_segment_frames < 1:
        raise ConfigError(f"min_segment_frames must be >= 1, got {min_segment_frames}")


def episode_pairs(ep, pairing: str = "interval", interval: int = 50, stride: int | None = None,
                  min_segment_frames: int = DEFAULT_MIN_SEGMENT_FRAMES) -> list[PairSpec]:
    """The pairs one episode (an ``EpisodeReader``) gives: interval pairs, then segment pairs in segment order.

    ``interval`` pairing refuses an episode shorter than the interval + 1 (DataError, as before); with ``both``
    such an episode still gives its segment pairs (and is refused only when it has none). An episode without
    segments gives no segment pairs (not an error). Only the episode's length and scene_info are read."""
    check_options(pairing, interval, stride, min_segment_frames)
    n = len(ep)
    out: list[PairSpec] = []
    if pairing in ("interval", "both"):
        if pairing == "interval" and n < interval + 1:
            raise DataError(f"{ep.path}: {n} frames, shorter than the interval ({interval}) + 1")
        out += interval_pairs(n, interval, stride)
    if pairing in ("segment", "both"):
        out += segment_pairs(episode_segments(ep.scene_info, n, str(ep.path)), min_segment_frames)
        if not out and pairing == "both" and n < interval + 1:
            raise DataError(f"{ep.path}: {n} frames, shorter than the interval ({interval}) + 1, and no motion "
                            f"segment of at least {min_segment_frames} frames")
    return out


def pair_instruction(spec: PairSpec, task: str, seed: int, key: str, split: str = "seen",
                     episode_instructions: dict | None = None) -> tuple[str, str]:
    """(instruction, source) for a pair of episode ``key``: task-level text for an interval pair (the key
    ``<key>:<t>`` keeps the choice of earlier conversions), a paraphrase of the step text for a segment pair."""
    if spec.segment is None:
        return instructions.choose(task, seed, f"{key}:{spec.start}", split, episode_instructions)
    return instructions.choose_step(spec.segment.instruction, seed, f"{key}:segment{spec.segment.index}", split)

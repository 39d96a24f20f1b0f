"""Plain data types passed between the core, the CLI and the ROS nodes (numpy at the boundary)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One camera frame: rgb (H, W, 3) uint8; optional depth in mm (H, W) and intrinsics K (3x3)."""

    rgb: np.ndarray
    depth: np.ndarray | None = None
    K: np.ndarray | None = None
    stamp: float = 0.0
    camera: str = "head_camera"


@dataclass
class Prediction:
    """A predicted future frame, how sure the model is of it, and what produced it.

    ``uncertainty``: (H, W) float32 in grey levels at the frame's geometry (frameplan_core/uncertainty.py: the
    samples' RMS distance from the published pixel; NaN where the model saw nothing); ``confidence`` in (0, 1].
    Both None with one sample, and ``uncertainty_note`` says why."""

    image: np.ndarray
    instruction: str
    inputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    uncertainty: np.ndarray | None = None
    confidence: float | None = None
    uncertainty_note: str | None = None


@dataclass
class Plan:
    """A visual plan: ``frames`` in time order (9 per grid, 8k+1 when chained), the generated mosaics, inputs.

    With ``samples`` >= 2: ``uncertainty`` (one (c, c) float32 map in grey levels per frame; frame 1 is the
    observed input, all zeros), ``grid_uncertainty`` (the last grid's maps as a (3c, 3c) mosaic),
    ``frame_confidence`` (per frame in (0, 1], frame 1 = 1.0) and ``confidence`` (all predicted frames together).
    With one sample they are None and ``uncertainty_note`` says why. A chained grid's spread is measured given the
    previous grid's mean last frame, so it does not include the doubt carried over from that frame."""

    frames: list[np.ndarray]
    grid: np.ndarray
    grids: list[np.ndarray] = field(default_factory=list)
    conditioning: np.ndarray | None = None
    instruction: str | None = None
    trajectory: np.ndarray | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    uncertainty: list[np.ndarray] | None = None
    grid_uncertainty: np.ndarray | None = None
    frame_confidence: list[float] | None = None
    confidence: float | None = None
    uncertainty_note: str | None = None

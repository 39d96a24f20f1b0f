"""Reference outputs of the embedded models for fixed seeds (tests/test_embedded_reference.py compares with them).

Regenerate after the embedded weights change (and only then: a refactor must leave the outputs bit-identical):

    python tests/make_reference_outputs.py            # both families
    python tests/make_reference_outputs.py predictor  # one of them

The file is keyed by a hash of each family's weight files, so the test can say "weights changed: regenerate"
rather than report a pixel difference. Outputs are compared as sha256 of their bytes; a few sampled values are
stored beside each hash to say how far a mismatch is. One torch thread, as in the test suite (tests/conftest.py):
CPU kernels may sum in another order with more threads."""
from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "embedded_reference.json"
WEIGHTS = ROOT / "frameplan_core" / "weights"
IMAGE = ROOT / "docs" / "img" / "embedded_input.png"  # a held-out simulated head-camera frame (320x240)
COMMAND = "python tests/make_reference_outputs.py"
FAMILIES = {"predictor": WEIGHTS / "predictor-tiny", "planner": WEIGHTS / "planner-tiny"}

PREDICTOR_INSTRUCTIONS = ("strike the block with the hammer", "hand the block over to the other arm")
PLANNER_INSTRUCTION = "stack the black block on the red block"
TRAJECTORY = [[160.0, 150.0], [190.0, 125.0], [225.0, 110.0], [250.0, 120.0]]  # pixels of IMAGE (320x240)
SEEDS = (0, 1234)
SAMPLES = (1, None)  # one sharp sample, and the model's default (the mean of several)
N_VALUES = 32


def weights_hash(folder: Path) -> str:
    """sha256 over every file of a model folder (relative path and bytes, in sorted order)."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def summary(array: np.ndarray) -> dict:
    """sha256 of the array's bytes (dtype and shape included) and N_VALUES evenly spaced values."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    flat = a.reshape(-1)
    idx = np.linspace(0, flat.size - 1, N_VALUES).astype(np.int64)
    return {"sha256": h.hexdigest(), "shape": list(a.shape), "dtype": a.dtype.str,
            "values": [float(v) if a.dtype.kind == "f" else int(v) for v in flat[idx]]}


def _image() -> np.ndarray:
    from frameplan_core.image import read_image

    return read_image(IMAGE)


def predictor_outputs() -> dict[str, dict]:
    """name -> summary for each predictor case: 2 instructions x seeds x samples, seed None, the uncertainty map,
    and a two-image batch."""
    from frameplan_core.predictor import FramePredictor

    p = FramePredictor.from_pretrained("tiny", device="cpu", dtype="float32")
    image = _image()
    out: dict[str, dict] = {}
    for k, text in enumerate(PREDICTOR_INSTRUCTIONS):
        for seed in SEEDS:
            for samples in SAMPLES:
                out[f"instruction{k}_seed{seed}_samples{samples or 'default'}"] = summary(
                    p.predict(image, text, seed=seed, samples=samples))
    out["instruction0_seedNone_samplesdefault"] = summary(p.predict(image, PREDICTOR_INSTRUCTIONS[0], seed=None))
    full = p.predict_full(image, PREDICTOR_INSTRUCTIONS[0], seed=0, output_size="input")
    out["full_input_size_image"] = summary(full.image)
    out["full_input_size_uncertainty"] = summary(full.uncertainty)
    out["full_input_size_confidence"] = summary(np.float64([full.confidence]))
    batch = p.predict_batch([image, image[::-1].copy()], list(PREDICTOR_INSTRUCTIONS), seed=5, samples=1)
    for i, frame in enumerate(batch):
        out[f"batch_item{i}_seed5_samples1"] = summary(frame)
    return out


def planner_outputs() -> dict[str, dict]:
    """name -> summary for each planner case: text / trajectory / both x seeds x samples, and a chained plan."""
    from frameplan_core.planner import GridPlanner

    pl = GridPlanner.from_pretrained("tiny", device="cpu", dtype="float32")
    image = _image()
    traj = np.float32(TRAJECTORY)
    modes = {"text": (PLANNER_INSTRUCTION, None), "trajectory": (None, traj), "both": (PLANNER_INSTRUCTION, traj)}
    out: dict[str, dict] = {}
    for mode, (text, trajectory) in modes.items():
        for seed in SEEDS:
            for samples in SAMPLES:
                plan = pl.plan(image, instruction=text, trajectory=trajectory, seed=seed, samples=samples)
                name = f"{mode}_seed{seed}_samples{samples or 'default'}"
                out[f"{name}_grid"] = summary(plan.grid)
                out[f"{name}_frames"] = summary(np.stack(plan.frames))
                if plan.grid_uncertainty is not None:
                    out[f"{name}_uncertainty"] = summary(plan.grid_uncertainty)
    plan = pl.plan(image, instruction=PLANNER_INSTRUCTION, seed=3, samples=1, chain=2)
    out["text_seed3_samples1_chain2_frames"] = summary(np.stack(plan.frames))
    return out


OUTPUTS = {"predictor": predictor_outputs, "planner": planner_outputs}


def environment() -> dict[str, str]:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def cpu_name() -> str:
    """The CPU model: another CPU may run other SIMD kernels, which sum floats in another order."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def dumps(data: dict) -> str:
    """JSON with one line per output (readable diffs when the references are regenerated)."""
    import json

    def block(obj: dict, depth: int) -> str:
        pad = " " * (2 * depth)
        items = []
        for k, v in obj.items():
            text = block(v, depth + 1) if isinstance(v, dict) and k != "environment" and depth < 2 else json.dumps(v)
            items.append(f"{pad}  {json.dumps(k)}: {text}")
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"

    return block(data, 0) + "\n"


def main(argv: list[str]) -> int:
    from frameplan_core import atomic

    torch.set_num_threads(1)
    names = argv or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        print(f"unknown model family {unknown}: expected some of {list(FAMILIES)}", file=sys.stderr)
        return 2
    import json

    data = json.loads(REFERENCE.read_text(encoding="utf-8")) if REFERENCE.is_file() else {}
    data["command"] = COMMAND
    for name in names:
        data[name] = {"weights_sha256": weights_hash(FAMILIES[name]), "environment": environment(),
                      "outputs": OUTPUTS[name]()}
        print(f"{name}: {len(data[name]['outputs'])} outputs")
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(REFERENCE, dumps(data))
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Diagnostic for instructed episodes (docs/eval/closed_loop.md): does a predictor's goal depend on the arm word?

On the val pairs of an instructed ip2p dataset that start within the first 20 frames, predict once with the
episode's own text and once with the other arm named; print, per pair, the fraction of the change that lies in the
image's left half for the real future frame, the prediction, and the prediction with the other arm named; then the
same two with the other sentence as the negative instruction (text guidance pushed away from the other arm).
Usage: python scripts/arm_probe.py MODEL [DATASET]   (DATASET default data/ip2p_i)"""
import glob
import json
import sys

import numpy as np
from PIL import Image

from frameplan_core.predictor import FramePredictor


def left_share(img: np.ndarray, x: np.ndarray) -> float:
    ch = np.abs(img.astype(float) - x.astype(float)).mean(-1)
    return float(ch[:, : ch.shape[1] // 2].sum() / (ch.sum() + 1e-9))


def main(model: str, data: str = "data/ip2p_i") -> None:
    p = FramePredictor.from_pretrained(model)
    rows = []
    for d in sorted(glob.glob(f"{data}/*/")):
        m = json.load(open(d + "meta.json"))
        if m["split"] != "val" or m["frames"][0] > 20:
            continue
        text = json.load(open(d + "prompt.json"))["edit"]
        arm = "left" if "left" in text else "right"
        other = "right" if arm == "left" else "left"
        name = d.rstrip("/").split("/")[-1]
        x = np.asarray(Image.open(f"{d}{name}_0.jpg").convert("RGB"))
        y = np.asarray(Image.open(f"{d}{name}_1.jpg").convert("RGB"))
        text_other = text.replace(arm, other)

        def share(t: str, negative: str | None = None) -> float:
            return left_share(np.asarray(p.predict(x, t, output_size="input", seed=0, negative_instruction=negative)), x)

        rows.append((m["task"], arm, left_share(y, x), share(text), share(text_other),
                     share(text, text_other), share(text_other, text)))
        r = rows[-1]
        print(f"{m['task']} {arm}: real {r[2]:.2f} named {r[3]:.2f} other arm {r[4]:.2f} | with the other sentence as "
              f"negative: named {r[5]:.2f} other arm {r[6]:.2f}", flush=True)
    for label, a, b in (("plain", 3, 4), ("negative instruction = the other arm's sentence", 5, 6)):
        agree = sum(1 for r in rows if (r[2] > 0.5) == (r[a] > 0.5))
        flip = sum(1 for r in rows if (r[a] > 0.5) != (r[b] > 0.5))
        moved = float(np.mean([abs(r[a] - r[b]) for r in rows])) if rows else 0.0
        toward = float(np.mean([(r[a] - r[b]) * (1 if r[1] == "left" else -1) for r in rows])) if rows else 0.0
        print(f"{model} [{label}]: {len(rows)} pairs; prediction on the real change's side {agree}/{len(rows)}; side "
              f"flips when the other arm is named {flip}/{len(rows)}; mean |left-share change| {moved:.3f}; "
              f"mean shift toward the named arm's side {toward:+.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

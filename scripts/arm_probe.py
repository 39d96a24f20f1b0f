"""Diagnostic for instructed episodes (docs/eval/closed_loop.md): does a predictor's goal depend on the arm word?

On the val pairs of an instructed ip2p dataset that start within the first 20 frames, predict once with the
episode's own text and once with the other arm named; print, per pair, the fraction of the change that lies in the
image's left half for the real future frame, the prediction, and the prediction with the other arm named.
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
        named = left_share(np.asarray(p.predict(x, text, output_size="input", seed=0)), x)
        swapped = left_share(np.asarray(p.predict(x, text.replace(arm, other), output_size="input", seed=0)), x)
        rows.append((m["task"], arm, left_share(y, x), named, swapped))
        print(f"{m['task']} {arm}: real {rows[-1][2]:.2f} named {named:.2f} other arm {swapped:.2f}", flush=True)
    agree = sum(1 for r in rows if (r[2] > 0.5) == (r[3] > 0.5))
    flip = sum(1 for r in rows if (r[3] > 0.5) != (r[4] > 0.5))
    moved = float(np.mean([abs(r[3] - r[4]) for r in rows])) if rows else 0.0
    print(f"{model}: {len(rows)} pairs; prediction on the real change's side {agree}/{len(rows)}; side flips when the "
          f"other arm is named {flip}/{len(rows)}; mean |left-share change| {moved:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""Diagnostic for instructed episodes (docs/eval/closed_loop.md): does a predictor's goal follow the arm word?

Needs the same scenes collected twice, once with the drawn arm and once with the other (``arm_choice: swapped``),
so each first frame has two real futures, one per arm. From the first frame, predict with each episode's sentence
(naming its arm) and score each prediction against both real futures inside the pixels where the two futures
differ (the arm-dependent region). A prediction "reads the arm" when it is closer to the future of the arm it was
told. A model that ignores the word gives the same frame for both sentences and reads exactly half.
The per-scene *word effect* (the sum of the two margins) separates the word from the scene: it is how far changing
only the arm word moves the prediction toward the other arm's future, zero for a model that ignores the word
whatever arm the scene itself suggests.
Usage: python scripts/arm_counterfactual_probe.py MODEL DRAWN_TASK_DIR SWAPPED_TASK_DIR [HORIZON] [WORDING]
[TEXT_SCALE] (task dirs as written by ``frameplan collect``, e.g. data/sim_si_probe/blocks_stack_easy_D435_pkl;
HORIZON frames ahead, default 50; WORDING seen or unseen, default seen; TEXT_SCALE default the model's)."""
import json
import sys
from pathlib import Path

import numpy as np

from frameplan_core.data.robotwin import load_frame_pickle, read_scene_info
from frameplan_core.predictor import FramePredictor

THRESHOLD = 25  # grey levels: where the two real futures differ


def rgb(ep: Path, frame: int) -> np.ndarray:
    return load_frame_pickle(ep / f"{frame}.pkl")["observation"]["head_camera"]["rgb"]


def twins(drawn: Path, swapped: Path) -> list[tuple[Path, Path]]:
    """Episode folders of the same seed in both collections whose first frames are identical."""
    a, b = read_scene_info(drawn), read_scene_info(swapped)
    by_seed = {v["seed"]: k for k, v in b.items()}
    out = []
    for k, v in sorted(a.items(), key=lambda kv: int(kv[0].split("_")[1])):
        if v["seed"] in by_seed:
            ea, eb = drawn / k.replace("_", ""), swapped / by_seed[v["seed"]].replace("_", "")
            if np.array_equal(rgb(ea, 0), rgb(eb, 0)):
                out.append((ea, eb))
    return out


def main(model: str, drawn: str, swapped: str, horizon: str = "50", wording: str = "seen",
         text_scale: str | None = None) -> None:
    p = FramePredictor.from_pretrained(model)
    h = int(horizon)
    ts = None if text_scale is None else float(text_scale)
    shown_scale = p.config.sampling.text_scale if ts is None else ts
    results = {"plain": [], "negative": []}
    for ea, eb in twins(Path(drawn), Path(swapped)):
        x = rgb(ea, 0)
        ya, yb = rgb(ea, h), rgb(eb, h)
        region = np.abs(ya.astype(float) - yb.astype(float)).mean(-1) > THRESHOLD
        if region.sum() < 50:
            continue
        ta = json.loads((ea.parent / "instructions" / f"{ea.name}.json").read_text())[wording][0]
        tb = json.loads((eb.parent / "instructions" / f"{eb.name}.json").read_text())[wording][0]

        def dist(img: np.ndarray, y: np.ndarray) -> float:
            return float(np.abs(img.astype(float) - y.astype(float)).mean(-1)[region].mean())

        for label, negs in (("plain", (None, None)), ("negative", (tb, ta))):
            pa = np.asarray(p.predict(x, ta, output_size="input", seed=0, text_scale=ts,
                                        negative_instruction=negs[0]))
            pb = np.asarray(p.predict(x, tb, output_size="input", seed=0, text_scale=ts,
                                        negative_instruction=negs[1]))
            # margin: how much closer each prediction is to its own arm's future than to the other's (grey levels)
            row = (dist(pa, yb) - dist(pa, ya), dist(pb, ya) - dist(pb, yb))
            results[label].append(row)
            print(f"{ea.name}/{eb.name} [{label}] region {int(region.sum())} px; margin named-arm future: "
                  f"{row[0]:+.1f} / {row[1]:+.1f} grey levels", flush=True)
    for label, rows in results.items():
        m = np.array(rows).reshape(-1)
        w = np.array(rows).reshape(-1, 2).sum(1)
        print(f"{model} [{label}, {wording} wording, horizon {h}, text scale {shown_scale}]: "
              f"{len(rows)} scenes; predictions closer to the named arm's future {int((m > 0).sum())}/{m.size}; "
              f"mean margin {m.mean() if m.size else 0:+.2f} grey levels; word effect > 0 in {int((w > 0).sum())}/"
              f"{w.size} scenes, mean {w.mean() if w.size else 0:+.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:7])

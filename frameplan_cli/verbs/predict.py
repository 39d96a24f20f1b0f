"""Predict the future frame for an image and an instruction with the frame predictor (seed 000).

Writes the prediction (--out) and a side-by-side PNG (input | prediction) next to it (<out>_side.png); with two or
more samples (the embedded model's default is 4) also its uncertainty map: <out>_uncertainty.png (colour heat map
with a scale bar, grey levels; grey = no estimate) and <out>_uncertainty.npy (the raw float32 map in grey levels,
NaN = no estimate; frameplan_core/uncertainty.py)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="input RGB image file (png/jpg, any size)")
    parser.add_argument("--instruction", required=True, help='what should happen, e.g. "strike the block with the hammer"')
    parser.add_argument("--out", required=True, help="output image path (.png/.jpg)")
    parser.add_argument("--negative", default=None,
                        help='negative instruction: guide away from it, e.g. "stack the blocks with the left arm"')
    parser.add_argument("--model", default="tiny",
                        help="checkpoint: our folder, a diffusers InstructPix2Pix folder, an SD-1.x .ckpt/.safetensors "
                             "file, or 'tiny' (embedded default)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--sampler", choices=["euler_a", "ddim", "dpmpp"], default=None)
    parser.add_argument("--text-scale", type=float, default=None, help="text guidance s_T")
    parser.add_argument("--image-scale", type=float, default=None, help="image guidance s_I")
    parser.add_argument("--samples", type=int, default=None,
                        help="average this many samples (the expected frame; default: the model's)")
    parser.add_argument("--paper", action="store_true", help="paper defaults: euler_a, 100 steps, s_T 7.5, s_I 1.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-size", choices=["model", "input"], default="model",
                        help="model resolution, or mapped back onto the input image's geometry")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto | fp32 | fp16 | bf16")
    parser.add_argument("--side-by-side", default=None, help="path of the side-by-side PNG (default <out>_side.png)")
    parser.add_argument("--no-uncertainty", action="store_true",
                        help="do not write <out>_uncertainty.png/.npy (the map costs one extra VAE decode)")


def check_image_out(path: str | Path, flag: str) -> Path:
    """Refuse an output image path that cannot be written before the model runs (minutes on a CPU)."""
    import cv2

    from frameplan_core import atomic
    from frameplan_core.errors import ConfigError

    path = atomic.check_output_file(path, flag)
    if path.suffix and not cv2.haveImageWriter(str(path)):
        raise ConfigError(f"{flag} {path}: cannot write a {path.suffix!r} image; use .png or .jpg")
    return path


def run(args: argparse.Namespace) -> int:
    from frameplan_core import atomic, uncertainty
    from frameplan_core.image import fit, hstack, read_image, write_image
    from frameplan_core.predictor import FramePredictor, SamplingConfig

    out = check_image_out(args.out, "--out")
    side = check_image_out(args.side_by_side, "--side-by-side") if args.side_by_side else \
        check_image_out(out.with_name(f"{out.stem}_side.png"), "--out (its side-by-side image)")
    u_png = None if args.no_uncertainty else check_image_out(out.with_name(f"{out.stem}_uncertainty.png"),
                                                             "--out (its uncertainty map)")
    u_npy = None if u_png is None else atomic.check_output_file(u_png.with_suffix(".npy"),
                                                                "--out (its raw uncertainty map)")
    image = read_image(args.image)
    predictor = FramePredictor.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    paper = SamplingConfig.paper() if args.paper else None
    kw = dict(
        steps=args.steps if args.steps is not None else (paper.steps if paper else None),
        sampler=args.sampler or (paper.sampler if paper else None),
        text_scale=args.text_scale if args.text_scale is not None else (paper.text_scale if paper else None),
        image_scale=args.image_scale if args.image_scale is not None else (paper.image_scale if paper else None),
        seed=args.seed, output_size=args.output_size, samples=args.samples, negative_instruction=args.negative)
    full = predictor.predict_full(image, args.instruction, **kw) if u_png is not None else None
    pred = full.image if full is not None else predictor.predict(image, args.instruction, **kw)
    write_image(out, pred)
    # the input as the model saw it (same crop) beside a model-size prediction; as is beside an input-size one
    left = fit(image, pred.shape[:2], predictor.config.crop) if args.output_size == "model" else image
    write_image(side, hstack([left, pred]))
    t = predictor.last_timings
    print(f"wrote {out} and {side} ({t.get('total_s', 0.0):.2f} s)")
    if full is not None and full.uncertainty is not None:
        write_image(u_png, uncertainty.with_legend(uncertainty.heatmap(full.uncertainty), uncertainty.HEATMAP_MAX,
                                                   full.confidence))
        atomic.write_bytes(u_npy, uncertainty.npy_bytes(full.uncertainty))
        print(f"wrote {u_png} and {u_npy} (confidence {full.confidence:.3f}; expected RMS error "
              f"{uncertainty.rms(full.uncertainty):.1f} grey levels)")
    elif full is not None:
        print(f"no uncertainty map: {full.uncertainty_note}")
    return 0

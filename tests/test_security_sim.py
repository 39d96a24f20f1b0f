"""SIGTERM during `frameplan collect` (issue 17), as `pkill -f "frameplan collect"` sends it: a real SAPIEN
collection subprocess (one task, head camera only, tiny images) must remove its unfinished episode, stop its
worker processes and exit 143, like Ctrl-C; a rerun removes what a SIGKILLed run left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sapien")
pytest.importorskip("mplib")

pytestmark = [pytest.mark.sim, pytest.mark.slow]

TASK = "blocks_stack_easy"
TINY = "Tiny"
START_TIMEOUT = 300.0  # sapien import, shader compilation and the first motion plan on a busy 2-core machine


def _collect(tmp_path: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``frameplan collect`` in the background; its output goes to a file (workers inherit it, and a pipe would
    make waiting for the parent wait for them too)."""
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f"{TINY}: {{w: 96, h: 72, fovy: 37.0}}\n")
    args = [sys.executable, "-m", "frameplan_cli", "collect", "--task", TASK, "--out", str(out),
            "--cameras", "head_camera", "--camera-type", TINY, "--set", f"camera_config={cams}",
            "--set", f"wrist_camera_type={TINY}", "--set", f"front_camera_type={TINY}", "--set", "shadows=false",
            "--save-freq", "5", "--no-progress", *extra]
    log = tmp_path / f"collect_{len(list(tmp_path.glob('collect_*.log')))}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")  # type: ignore[attr-defined]


def _task_dir(out: Path) -> Path:
    return out / f"{TASK}_{TINY}_pkl"


def _partials(out: Path) -> list[Path]:
    d = _task_dir(out)
    return sorted(p for p in d.iterdir() if p.name.endswith(".partial")) if d.is_dir() else []


def _wait_writing(proc: subprocess.Popen, out: Path, episodes: int, frames: int = 3) -> list[Path]:
    """Wait until ``episodes`` unfinished episodes of ``proc`` or its workers hold at least ``frames`` frames."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, _output(proc)[-3000:]
        pids = {proc.pid, *_children(proc.pid)}
        busy = [p for p in _partials(out) if int(p.name.split(".")[2].split("-")[0]) in pids
                and len(list(p.glob("*.pkl"))) >= frames]
        if len(busy) >= episodes:
            return busy
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"collection never wrote {episodes} episode(s): {_output(proc)[-3000:]}")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited


def test_sigterm_removes_the_unfinished_episode_and_a_rerun_sweeps_a_killed_ones(tmp_path):
    out = tmp_path / "data"
    first = _collect(tmp_path, out, "--episodes", "1")
    (stale,) = _wait_writing(first, out, 1)
    first.kill()  # SIGKILL: no clean-up possible, the hidden folder stays
    first.wait(timeout=60)
    assert stale.is_dir()

    second = _collect(tmp_path, out, "--episodes", "1")
    (own,) = _wait_writing(second, out, 1)
    assert own.name.startswith(f".episode0.{second.pid}-")
    assert not stale.exists()  # swept by the rerun: its writer is gone
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=180)
    err = _output(second)
    assert second.returncode == 143 and "terminated" in err and "Traceback" not in err, err[-3000:]
    assert _partials(out) == [] and not (_task_dir(out) / "episode0").exists()


def test_sigterm_to_the_parent_stops_the_workers_and_removes_their_episodes(tmp_path):
    out = tmp_path / "data"
    proc = _collect(tmp_path, out, "--episodes", "2", "--workers", "2")
    _wait_writing(proc, out, 1, frames=2)
    workers = [pid for pid in _children(proc.pid) if _running(pid)
               and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]  # not the resource tracker
    assert len(workers) >= 2, workers
    proc.send_signal(signal.SIGTERM)  # the parent only, as `pkill -f "frameplan collect"` does
    try:
        proc.wait(timeout=240)
        time.sleep(1.0)
        left = [pid for pid in workers if _running(pid)]
    finally:
        for pid in workers:  # whatever happened, no stray simulator processes after this test
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert left == [], f"collection workers {left} still running after the parent ended"
    assert proc.returncode == 143 and "terminated" in _output(proc), _output(proc)[-3000:]
    assert _partials(out) == [] and not any(_task_dir(out).glob("episode*"))

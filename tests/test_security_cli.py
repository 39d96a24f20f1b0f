"""Hostile and unlucky input to the `frameplan` CLI (issue 17): checkpoints whose pickle runs code, torch errors of
many lines, SIGTERM during a conversion and what a killed one leaves, output paths that cannot be written, a
garbage .hdf5, a training run on an empty dataset. Real commands, most as subprocesses (exit codes, stderr)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from frameplan_core import atomic
from frameplan_core.errors import ConfigError, ModelError, one_line

REPO = Path(__file__).resolve().parents[1]


def _frameplan(*args, timeout=300):
    """``frameplan ARGS`` as a subprocess (exit code and everything it prints, tracebacks included)."""
    return subprocess.run([sys.executable, "-m", "frameplan_cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, check=False)


def _in_process(capsys, *args):
    """``frameplan ARGS`` in this process (no interpreter start-up): a subprocess-like result."""
    from frameplan_cli.main import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


def _one_error_line(r, verb):
    err = r.stderr.strip().splitlines()
    errors = [ln for ln in err if ln.startswith(f"frameplan {verb}: error:")]
    assert r.returncode == 1 and len(errors) == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr[-3000:]
    return errors[0]


class _RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil_ckpt(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"frameplan_config": {"model": "tiny"}, "state_dict": {}, "x": _RunsCode(marker)}, path)
    return path, marker


# ---------------------------------------------------------------- checkpoints
def test_a_checkpoint_that_would_run_code_is_refused_everywhere(evil_ckpt, tmp_path, capsys):
    from frameplan_training.synthetic import write_ip2p

    ckpt, marker = evil_ckpt
    data = write_ip2p(tmp_path / "ip2p", episodes_per_task=1, pairs_per_episode=1)
    runs = {"export": ("export", "predictor", "--checkpoint", ckpt, "--out", tmp_path / "exported"),
            "train": ("train", "predictor", "--data", data, "--out", tmp_path / "run", "--resume", ckpt,
                      "--set", "accelerator=cpu"),
            "inspect": ("inspect", ckpt),
            "predict": ("predict", "--image", REPO / "docs/img/preview_block_handover.png", "--instruction",
                        "hand the block over", "--model", ckpt, "--out", tmp_path / "o.png")}
    for verb, args in runs.items():
        line = _one_error_line(_in_process(capsys, *args), verb)
        assert "refused" in line and "system" in line, line
        assert not marker.exists(), f"frameplan {verb} ran the checkpoint's code"
    assert not (tmp_path / "run").exists() and not (tmp_path / "exported").exists()


def test_the_library_refuses_it_too(evil_ckpt, tmp_path):
    from frameplan_training import run

    ckpt, marker = evil_ckpt
    with pytest.raises(ModelError, match="refused: loading it would call .*system"):
        run.read_checkpoint(ckpt, "--resume")
    with pytest.raises(ModelError, match="refused"):
        run.export_checkpoint("predictor", ckpt, tmp_path / "out")
    assert not marker.exists()


def test_torch_errors_become_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04" + os.urandom(300))  # a damaged zip: torch's message spans lines
    for args in (("inspect", junk), ("export", "predictor", "--checkpoint", junk, "--out", tmp_path / "x")):
        line = _one_error_line(_in_process(capsys, *args), args[0])
        assert "cannot read the checkpoint" in line and str(junk) in line
    legacy = tmp_path / "legacy.ckpt"  # the old (non-zip) pickle format with a code-running global
    torch.save({"x": _RunsCode(tmp_path / "PWNED")}, legacy, _use_new_zipfile_serialization=False)
    line = _one_error_line(_in_process(capsys, "inspect", legacy), "inspect")
    assert "refused" in line and "system" in line and not (tmp_path / "PWNED").exists()


def test_one_line_caps_and_escapes():
    assert one_line("a\n   b\tc") == "a b c"
    assert one_line("hand\x1b[2J over") == "hand\\x1b[2J over"
    capped = one_line("x" * 1_000_000, 100)
    assert len(capped) < 140 and capped.endswith("(1000000 characters in all)")


# ---------------------------------------------------------------- output paths, garbage input, empty data
def test_predict_checks_out_before_the_model_runs(tmp_path, capsys):
    image = REPO / "docs/img/preview_block_handover.png"
    (tmp_path / "a_file").write_text("not a folder")
    for out, expected in ((tmp_path / "x.txt", "cannot write a '.txt' image"),
                          (tmp_path / "a_file" / "o.png", "is not a folder"),
                          (tmp_path, "is a folder")):
        line = _one_error_line(_in_process(capsys, "predict", "--image", image, "--instruction", "stack the blocks",
                                          "--steps", "1", "--samples", "1", "--out", out), "predict")
        assert expected in line and "--out" in line, line
        assert not (tmp_path / "x_side.png").exists()
    with pytest.raises(ConfigError, match="side-by-side"):
        from frameplan_cli.verbs.predict import check_image_out

        check_image_out(tmp_path / "a_file" / "side.png", "--side-by-side")


def test_inspect_garbage_hdf5_is_one_line(tmp_path):
    for name in ("garbage.hdf5", "episode0.hdf5"):
        (tmp_path / name).write_bytes(os.urandom(3000))
        line = _one_error_line(_frameplan("inspect", tmp_path / name), "inspect")
        assert name in line


def test_train_on_an_empty_dataset_creates_no_out_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "deep" / "out"
    line = _one_error_line(_in_process(capsys, "train", "predictor", "--data", tmp_path / "empty", "--out", out,
                                      "--set", "accelerator=cpu"), "train")
    assert "splits.json" in line or "empty" in line
    assert not (tmp_path / "deep").exists()


# ---------------------------------------------------------------- SIGTERM and leftovers
def test_sigterm_during_convert_removes_the_partial_dataset(tmp_path):
    from test_data_bad_input import _start_blocked_conversion

    proc, partial = _start_blocked_conversion(tmp_path)
    assert partial.name.startswith(f".d.{proc.pid}-")  # the writer's pid: what a later sweep checks
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err, err[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_rerun_sweeps_what_a_killed_conversion_left(tmp_path):
    import shutil

    from test_data_bad_input import _start_blocked_conversion

    from frameplan_core.data import robotwin

    proc, partial = _start_blocked_conversion(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert partial.is_dir()
    live = tmp_path / f".d.{os.getpid()}-alive1.partial"  # a writer that still runs (this process): kept
    live.mkdir()
    other = tmp_path / ".other.1234567-x.partial"  # another dataset's leftover: not this writer's to remove
    other.mkdir()
    ep3 = robotwin.episode_dir(tmp_path / "src", "block_hammer_beat", "D435", 3)
    (ep3 / "10.pkl").unlink()  # the FIFO that blocked the first run
    shutil.copy(ep3 / "9.pkl", ep3 / "10.pkl")
    r = _frameplan("convert", "robotwin", tmp_path / "src", "--to", "ip2p", tmp_path / "d", "--interval", "10")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not partial.exists() and live.is_dir() and other.is_dir()
    assert (tmp_path / "d" / "seeds.json").is_file()


def test_sweep_partials_removes_only_dead_writers_of_the_named_kind(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    names = {f".episode3.{dead}-abc_12.partial": True, f".episode4.{os.getpid()}-abc.partial": False,
             f".episode5.{dead}-0123abcd.old": True, ".episode6.legacy12.partial": False,
             ".episode7.legacy34.partial": True, f".other.{dead}-x.partial": False, f"episode8.{dead}-x.partial": False,
             f".episode9.{dead}-x.tmp": False, f".episodes.{dead}-x.partial": False}
    for name in names:
        (tmp_path / name).mkdir()
    os.utime(tmp_path / ".episode7.legacy34.partial", (0, 0))  # an old one from before pids were in the name
    removed = atomic.sweep_partials(tmp_path, r"episode\d+")
    assert sorted(p.name for p in removed) == sorted(n for n, gone in names.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, gone in names.items() if not gone)
    assert atomic.sweep_partials(tmp_path / "missing", "x") == []


def test_sigterm_as_interrupt_runs_the_clean_up():
    """In-process: SIGTERM inside the block raises Terminated (a KeyboardInterrupt) and the handler is restored."""
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(atomic.Terminated):
        with atomic.sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                cleaned.append(True)
    assert cleaned == [True] and signal.getsignal(signal.SIGTERM) == before

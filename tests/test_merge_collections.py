"""scripts/merge_collections.py: two collections of one task become one folder, episodes renumbered in order, each
with its own frames, instruction json and scene_info entry; an existing output is never touched."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "merge_collections.py"


def _task_dir(root: Path, tag: str, n: int) -> Path:
    d = root / "block_handover_D435_pkl"
    (d / "instructions").mkdir(parents=True)
    info = {}
    for e in range(n):
        (d / f"episode{e}").mkdir()
        for f in range(2):
            (d / f"episode{e}" / f"{f}.pkl").write_bytes(f"{tag}{e}/{f}".encode())
        (d / "instructions" / f"episode{e}.json").write_text(json.dumps({"seen": [f"{tag} {e}"]}))
        info[f"episode_{e}"] = {"tag": tag, "episode": e}
    (d / "scene_info.json").write_text(json.dumps(info))
    return d


def _run(*args: Path):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_two_collections_become_one_renumbered_folder(tmp_path):
    a = _task_dir(tmp_path / "drawn", "a", 2)
    b = _task_dir(tmp_path / "swapped", "b", 3)
    out = tmp_path / "all" / "block_handover_D435_pkl"
    r = _run(out, a, b)
    assert r.returncode == 0, r.stderr
    assert "5 episodes" in r.stdout
    info = json.loads((out / "scene_info.json").read_text())
    assert [info[f"episode_{i}"]["tag"] for i in range(5)] == ["a", "a", "b", "b", "b"]
    assert info["episode_4"]["episode"] == 2
    assert (out / "episode3" / "1.pkl").read_bytes() == b"b1/1"
    assert json.loads((out / "instructions" / "episode2.json").read_text()) == {"seen": ["b 0"]}
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no hidden .partial work folder left


def test_an_existing_output_or_a_folder_that_is_no_collection_is_refused(tmp_path):
    a = _task_dir(tmp_path / "drawn", "a", 1)
    out = tmp_path / "all" / "block_handover_D435_pkl"
    out.mkdir(parents=True)
    r = _run(out, a)
    assert r.returncode != 0 and "exists" in r.stderr and "Traceback" not in r.stderr
    r = _run(tmp_path / "other", tmp_path / "drawn")
    assert r.returncode != 0 and "no scene_info.json" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "other").exists()


def test_an_episode_without_its_instruction_json_leaves_no_partial_folder(tmp_path):
    a = _task_dir(tmp_path / "drawn", "a", 2)
    (a / "instructions" / "episode1.json").unlink()
    out = tmp_path / "all" / "block_handover_D435_pkl"
    r = _run(out, a)
    assert r.returncode != 0 and "episode1.json" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not any(p.name.endswith(".partial") for p in out.parent.iterdir())


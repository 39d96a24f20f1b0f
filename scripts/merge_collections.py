"""Join collections of one task into one folder, episodes renumbered in order (e.g. the drawn and the swapped-arm
collection of the same scenes, docs/eval/closed_loop.md), so `frameplan convert` and `frameplan train policy`
read them as one dataset. Frames are hard links (no copy); instruction jsons and scene_info entries follow their
episode. The output folder must not exist; it appears only when complete.
Usage: python scripts/merge_collections.py OUT_TASK_DIR TASK_DIR [TASK_DIR ...]
(task dirs as written by ``frameplan collect``, e.g. data/sim_ho/block_handover_D435_pkl)."""
import json
import os
import shutil
import sys
from pathlib import Path

from frameplan_core.atomic import Terminated, atomic_dir, sigterm_as_interrupt
from frameplan_core.data.episode import parse_episode_name, read_scene_info


def episodes(task_dir: Path) -> list[int]:
    return sorted(i for p in task_dir.glob("episode*") if p.is_dir() and (i := parse_episode_name(p.name)) is not None)


def merge(out: Path, sources: list[Path]) -> int:
    if out.exists():
        sys.exit(f"merge_collections: {out} exists; choose a new folder")
    for src in sources:
        if not (src / "scene_info.json").is_file():
            sys.exit(f"merge_collections: {src} is not a collected task folder (no scene_info.json)")
    # atomic_dir: a missing file, Ctrl-C or SIGTERM (sigterm_as_interrupt) leaves no half-merged folder behind
    with atomic_dir(out) as tmp:
        (tmp / "instructions").mkdir()
        info, n = {}, 0
        for src in sources:
            src_info = read_scene_info(src)
            for e in episodes(src):
                (tmp / f"episode{n}").mkdir()
                for f in (src / f"episode{e}").iterdir():
                    os.link(f, tmp / f"episode{n}" / f.name)
                shutil.copyfile(src / "instructions" / f"episode{e}.json",
                                tmp / "instructions" / f"episode{n}.json")
                info[f"episode_{n}"] = src_info[f"episode_{e}"]
                n += 1
        (tmp / "scene_info.json").write_text(json.dumps(info))
    return n


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        with sigterm_as_interrupt():
            n = merge(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])
    except (OSError, KeyError, ValueError) as e:  # a missing frame, instruction json or scene_info entry
        sys.exit(f"merge_collections: {type(e).__name__}: {str(e)[:300]}")
    except KeyboardInterrupt as e:
        sys.exit(143 if isinstance(e, Terminated) else 130)
    print(f"{n} episodes in {sys.argv[1]}")

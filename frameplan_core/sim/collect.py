"""Collection of RoboTwin 1.0 episodes: seeds, retries, resume, parallel worker processes, progress and preview.

Episode N tries seeds ``seed + 1000*N``, ``+1``, ... : a failed plan or a failed success check discards the attempt
(nothing is written, EpisodeWriter is atomic) and the next seed is tried. Existing episodes are skipped, so an
interrupted run resumes at the next missing episode. Every episode records its seed in scene_info.json."""
from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from frameplan_core.errors import FrameplanError, SimError
from frameplan_core.sim.task_config import TaskConfig

log = logging.getLogger(__name__)

SEED_STRIDE = 1000


@dataclass
class CollectSummary:
    task: str
    out: str
    requested: int = 0
    written: int = 0
    skipped_existing: int = 0
    frames: int = 0
    attempts: int = 0
    plan_failures: int = 0
    check_failures: int = 0
    seconds: float = 0.0
    render_s: float = 0.0
    physics_s: float = 0.0
    episodes: list = field(default_factory=list)

    @property
    def failures(self) -> int:
        return self.plan_failures + self.check_failures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = self.failures
        return d


def episode_seed(cfg: TaskConfig, index: int, attempt: int) -> int:
    return int(cfg.seed) + SEED_STRIDE * int(index) + int(attempt)


def missing_episodes(out: str | Path, cfg: TaskConfig) -> tuple[list[int], int]:
    """Indices still to collect in [st_episode, st_episode + episode_num) and how many already exist."""
    from frameplan_core.data.robotwin import episode_dir

    want = range(cfg.st_episode, cfg.st_episode + cfg.episode_num)
    todo = [i for i in want if not episode_dir(out, cfg.task_name, cfg.head_camera_type, i).is_dir()]
    return todo, len(want) - len(todo)


def collect_episode(cfg: TaskConfig, out: str | Path, index: int, on_frame=None, on_attempt=None) -> dict:
    """Collect episode ``index``; returns {index, seed, frames, attempts, plan_failures, check_failures, ...}."""
    from frameplan_core.data.robotwin import EpisodeWriter
    from frameplan_core.sim import make_task
    from frameplan_core.sim.robots import PlanningError

    result = {"index": index, "plan_failures": 0, "check_failures": 0, "attempts": 0, "render_s": 0.0,
              "physics_s": 0.0, "errors": []}
    for attempt in range(cfg.max_attempts):
        seed = episode_seed(cfg, index, attempt)
        result["attempts"] += 1
        task = make_task(cfg.task_name, seed=seed, camera_type=cfg.head_camera_type, cameras=cfg.cameras, config=cfg)
        frames = 0
        try:
            with EpisodeWriter(out, cfg.task_name, cfg.head_camera_type, index) as ep:
                for f in task.stream(cfg.save_freq):
                    ep.add_frame(f.to_robotwin())
                    frames += 1
                    if on_frame:
                        on_frame()
                if not task.success():
                    raise _Discard(f"seed {seed}: success check failed")
                ep.instructions = task.instructions()
                ep.scene_info = {**task.scene_info, "attempt": attempt, "frames": frames, "save_freq": cfg.save_freq}
        except PlanningError as exc:
            result["plan_failures"] += 1
            result["errors"].append(str(exc))
            log.info("episode %d seed %d discarded: %s", index, seed, exc)
            if on_attempt:
                on_attempt("plan")
            continue
        except _Discard as exc:
            result["check_failures"] += 1
            result["errors"].append(str(exc))
            log.info("episode %d discarded: %s", index, exc)
            if on_attempt:
                on_attempt("check")
            continue
        finally:
            result["render_s"] += task.timings["render_s"]
            result["physics_s"] += task.timings["physics_s"]
            task.close()
        result.update(seed=seed, frames=frames)
        return result
    raise SimError(f"{cfg.task_name} episode {index}: no successful episode in {cfg.max_attempts} seeds "
                   f"({episode_seed(cfg, index, 0)}..{episode_seed(cfg, index, cfg.max_attempts - 1)}); "
                   f"last errors: {result['errors'][-3:]}")


class _Discard(Exception):
    """The expert ran but the success check failed: discard the attempt."""


def _exit_on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second terminate must not interrupt the clean-up
    raise SystemExit(128 + signum)


def _worker(cfg: TaskConfig, out: str, jobs, events) -> None:
    """Worker process: take episode indices from ``jobs`` until a None arrives; report through ``events``."""
    # when one worker fails the parent terminates the others: SIGTERM becomes SystemExit so the episode being
    # written is removed by its atomic writer, not left behind as a hidden .partial folder (~140 MB at 320x240)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parent = mp.parent_process()

    def on_frame() -> None:
        # a parent killed outright (SIGKILL) cannot terminate its workers: they notice here and stop, removing
        # their unfinished episode, instead of running to the end of the job list
        if parent is not None and not parent.is_alive():
            raise SystemExit(1)
        events.put(("frame", None))

    while True:
        index = jobs.get()
        if index is None:  # nothing left to clean up: a terminate while the interpreter shuts down must not raise
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # SystemExit inside an atexit hook (a traceback on stderr)
            return
        try:
            res = collect_episode(cfg, out, index, on_frame=on_frame,
                                  on_attempt=lambda kind: events.put(("fail", kind)))
            events.put(("done", res))
        except FrameplanError as exc:
            events.put(("error", f"{type(exc).__name__}: {exc}"))
        except SystemExit:  # terminated by the parent, which is already stopping and reads no more events:
            events.cancel_join_thread()  # exit now instead of waiting to flush them into a full pipe
            raise
        except BaseException as exc:  # report, then let the parent stop everything
            events.put(("error", f"{type(exc).__name__}: {exc}"))
            raise


def collect(cfg: TaskConfig, out: str | Path, workers: int = 1, progress: bool = True) -> CollectSummary:
    """Collect the missing episodes of ``cfg`` under ``out`` with ``workers`` processes; returns the summary."""
    from tqdm import tqdm

    from frameplan_core import atomic
    from frameplan_core.data.robotwin import task_dir

    out = Path(out)
    # unfinished episodes of an earlier run that was killed (SIGKILL, power cut): only dead writers' folders
    atomic.sweep_partials(task_dir(out, cfg.task_name, cfg.head_camera_type), r"episode\d+")
    todo, existing = missing_episodes(out, cfg)
    summary = CollectSummary(cfg.task_name, str(out), requested=cfg.episode_num, skipped_existing=existing)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"{cfg.task_name}", unit="ep", disable=not progress, dynamic_ncols=True)

    def post() -> None:
        bar.set_postfix(frames=summary.frames, ok=summary.written, failed=summary.failures, refresh=False)

    def done(res: dict) -> None:
        summary.written += 1
        summary.attempts += res["attempts"]
        summary.render_s += res["render_s"]
        summary.physics_s += res["physics_s"]
        summary.episodes.append({"index": res["index"], "seed": res["seed"], "frames": res["frames"],
                                 "attempts": res["attempts"]})
        bar.update(1)
        post()

    def failed(kind: str) -> None:
        if kind == "plan":
            summary.plan_failures += 1
        else:
            summary.check_failures += 1
        post()

    def frame() -> None:
        summary.frames += 1
        if summary.frames % 10 == 0:
            post()
            bar.refresh()

    try:
        if workers <= 1 or len(todo) <= 1:
            for index in todo:
                done(collect_episode(cfg, out, index, on_frame=frame, on_attempt=failed))
        else:
            _run_parallel(cfg, out, todo, min(workers, len(todo)), done, failed, frame)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
    summary.episodes.sort(key=lambda e: e["index"])
    return summary


def _run_parallel(cfg, out, todo, workers, done, failed, frame) -> None:
    from frameplan_core.sim.workers import run_workers

    def on_event(event: tuple) -> bool:
        kind, payload = event
        if kind == "frame":
            frame()
        elif kind == "fail":
            failed(payload)
        elif kind == "done":
            done(payload)
            return True
        else:
            raise SimError(f"collection worker sent an unknown event {kind!r}")
        return False

    run_workers(_worker, (cfg, str(out)), list(todo), workers, on_event, "collection")


def preview(out: str | Path, cfg: TaskConfig, index: int | None = None, columns: int = 8,
            path: str | Path | None = None, cell: int | None = None) -> Path:
    """PNG strip of one written episode: one row per camera, ``columns`` evenly spaced frames, read back through the
    RoboTwin reader (so the preview also proves the files load)."""
    from frameplan_core.data.robotwin import RoboTwinEpisode, episode_dir, task_dir
    from frameplan_core.image import contact_sheet, write_image

    tdir = task_dir(out, cfg.task_name, cfg.head_camera_type)
    if index is None:
        from frameplan_core.data.episode import parse_episode_name

        found = sorted(i for p in tdir.glob("episode*") if (i := parse_episode_name(p.name)) is not None) if tdir.is_dir() else []
        if not found:
            raise SimError(f"{tdir}: no episode to preview")
        index = found[0]
    ep = RoboTwinEpisode(episode_dir(out, cfg.task_name, cfg.head_camera_type, index))
    n = len(ep)
    picks = sorted({round(i * (n - 1) / max(1, columns - 1)) for i in range(columns)})
    frames = [ep.frame(i) for i in picks]
    cams = [c for c in ("head_camera", "front_camera", "left_camera", "right_camera") if c in frames[0]["observation"]]
    images, labels = [], []
    for cam in cams:
        for i, fr in zip(picks, frames):
            images.append(fr["observation"][cam]["rgb"])
            labels.append(f"{cam} {i}" if i == picks[0] else f"{i}")
    sheet = contact_sheet(images, cols=len(picks), cell=cell or frames[0]["observation"][cams[0]]["rgb"].shape[0],
                          labels=labels)
    return write_image(Path(path) if path else tdir / f"preview_episode{index}.png", sheet)


def format_summary(s: CollectSummary) -> str:
    fps = s.frames / s.seconds if s.seconds > 0 else float("nan")
    return (f"{s.task}: {s.written} episode(s) written, {s.skipped_existing} already present, {s.frames} frames, "
            f"{s.written} successes, {s.failures} failures discarded ({s.plan_failures} plan, {s.check_failures} "
            f"success check), {s.seconds:.1f} s ({fps:.2f} frames/s) -> {s.out}")


__all__ = [
    "CollectSummary",
    "collect",
    "collect_episode",
    "episode_seed",
    "format_summary",
    "missing_episodes",
    "preview",
]

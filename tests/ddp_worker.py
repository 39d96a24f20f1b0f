"""Test helper for tests/test_ddp.py: run the real ``frameplan train`` command (``frameplan_cli.main.main``) in a
process that records what each rank saw, for checks that cannot be made from the run folder alone.

  python tests/ddp_worker.py TRACE_DIR -- train predictor --data D --out O --set strategy=ddp --set devices=2 ...

Lightning's DDP launcher re-runs this same command line for ranks 1..N-1 (with LOCAL_RANK set), so every rank
records, in ``TRACE_DIR/rank<R>.json`` / ``rank<R>.pt``: the dataset indices and augmentation seeds of every trained
batch, the local loss of every optimizer step, whether the rank's progress bar was on, every file the process
created, opened for writing, renamed or removed under the run folder (an audit hook), and the raw and EMA
trainable weights at the end of training. Nothing of the training is replaced: ``Recorder`` only reads, and
``run.train`` is the real function, given one extra callback."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

WRITE_EVENTS = ("os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir", "os.mkdir", "shutil.rmtree",
                "shutil.move")


class Recorder(L.Callback):
    """What one rank trained on and ended with (also used in-process for the one-process reference run)."""

    def __init__(self, trace_dir: Path | None = None) -> None:
        self.trace_dir = trace_dir
        self.batches: list[dict] = []
        self.losses: dict[int, float] = {}
        self.progress_bar: bool | None = None
        self.trainer = None

    def on_train_start(self, trainer, module) -> None:
        self.trainer = trainer
        bar = trainer.progress_bar_callback
        self.progress_bar = bool(bar is not None and bar.is_enabled)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # after the optimizer step: global_step is the (1-based) step this batch was trained in
        self.batches.append({"step": trainer.global_step, "epoch": trainer.current_epoch,
                             "index": [int(i) for i in batch["index"]],
                             "seed": [int(s) for s in batch["seed"]] if "seed" in batch else None})
        self.losses[trainer.global_step] = float(outputs["loss"])

    def on_train_end(self, trainer, module) -> None:
        if self.trace_dir is not None:
            state = {"raw": {k: v.detach().cpu().clone() for k, v in module.named_trainable_state()},
                     "ema": module.ema.state_dict()["shadows"] if module.ema is not None else {}}
            torch.save(state, self.trace_dir / f"rank{trainer.global_rank}.pt")


def main() -> int:
    torch.set_num_threads(1)
    trace_dir = Path(sys.argv[1]).resolve()
    if sys.argv[2] != "--":
        raise SystemExit("usage: ddp_worker.py TRACE_DIR -- <frameplan arguments>")
    argv = sys.argv[3:]
    out = Path(argv[argv.index("--out") + 1]).resolve()
    writes: list[list[str]] = []

    def note(event: str, path) -> None:
        try:
            p = Path(os.fsdecode(path)).resolve()
        except (TypeError, ValueError, OSError):
            return
        if p == out or out in p.parents:
            writes.append([event, str(p.relative_to(out))])

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            _, mode, flags = args
            if (mode and any(c in str(mode) for c in "wax+")) or (
                    isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                note("open", args[0])
        elif event in WRITE_EVENTS:
            note(event, args[0])
            if event in ("os.rename", "os.replace", "shutil.move"):  # (src, dst, ...): a file moved into the folder
                note(event, args[1])

    sys.addaudithook(audit)
    from frameplan_training import run

    rec = Recorder(trace_dir)
    run.train = functools.partial(run.train, extra_callbacks=[rec])  # the CLI looks it up when it runs
    from frameplan_cli.main import main as cli_main

    rc = cli_main(argv)
    trainer = rec.trainer
    rank = trainer.global_rank if trainer is not None else int(os.environ.get("LOCAL_RANK", 0))
    (trace_dir / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": trainer.world_size if trainer is not None else None, "rc": rc,
        "batches": rec.batches, "losses": {str(k): v for k, v in rec.losses.items()},
        "progress_bar": rec.progress_bar, "writes": writes}, indent=1))
    # the launching process outlives the ranks it started, so the test's end of this process is the run's end
    launcher = getattr(trainer.strategy, "launcher", None) if trainer is not None else None
    for proc in getattr(launcher, "procs", []):
        proc.wait(timeout=120)
    return rc


if __name__ == "__main__":
    sys.exit(main())

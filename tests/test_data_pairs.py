"""Step-level pairs: motion segments from scene_info.json (recorded spans, older step-only entries, none),
``frameplan convert --pairing interval|segment|both``, step paraphrases, and splits shared by both pair kinds."""
import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from frameplan_cli.main import main
from frameplan_core.data import instructions, ip2p, pairs, robotwin, robotwin2
from frameplan_core.errors import DataError

H, W = 24, 32
SAVE_FREQ = 15
# episode_0 of a real block_hammer_beat collection (116 frames, save_freq 15): what the collector recorded
RECORDED = [
    {"step": 0, "instruction": "reach for the hammer's handle", "start_frame": 0, "end_frame": 48},
    {"step": 708, "instruction": "grasp the hammer", "start_frame": 48, "end_frame": 53},
    {"step": 783, "instruction": "lift the hammer", "start_frame": 53, "end_frame": 71},
    {"step": 1058, "instruction": "move the hammer above the block", "start_frame": 71, "end_frame": 84},
    {"step": 1258, "instruction": "strike the block with the hammer", "start_frame": 84, "end_frame": 100},
    {"step": 1490, "instruction": "raise the hammer", "start_frame": 100, "end_frame": 115},
]


def frame(t: int, ep: int = 0) -> dict:
    """Flat colours (JPEG-safe): red = 2t encodes the frame number, blue = 30*episode."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 2 * t, 128, 30 * ep
    return {"observation": {"head_camera": {"rgb": rgb}}, "pointcloud": [], "joint_action": np.zeros(14),
            "endpose": np.zeros(14)}


def old_style(segments: list[dict]) -> list[dict]:
    return [{"step": s["step"], "instruction": s["instruction"]} for s in segments]


class _Episode:
    """The two things pairing reads from an episode reader: its length and its scene_info entry."""

    def __init__(self, n, scene_info, path="ep"):
        self.n, self.scene_info, self.path = n, scene_info, Path(path)

    def __len__(self):
        return self.n


def test_recorded_and_derived_segments_agree():
    new = pairs.episode_segments({"segments": RECORDED, "save_freq": SAVE_FREQ}, 116, "ep")
    assert [(s.start_frame, s.end_frame) for s in new] == [(r["start_frame"], r["end_frame"]) for r in RECORDED]
    assert not any(s.derived for s in new)
    # an older episode has only {step, instruction}: ceil(step / save_freq), ends at the next start / last frame
    old = pairs.episode_segments({"segments": old_style(RECORDED), "save_freq": SAVE_FREQ}, 116, "ep")
    assert [(s.start_frame, s.end_frame, s.instruction) for s in old] == \
        [(s.start_frame, s.end_frame, s.instruction) for s in new]
    assert all(s.derived for s in old)
    # a step after the last saved frame is clipped to it
    late = pairs.episode_segments({"segments": [{"step": 0, "instruction": "a"}, {"step": 10_000, "instruction": "b"}],
                                   "save_freq": 15}, 20, "ep")
    assert [(s.start_frame, s.end_frame) for s in late] == [(0, 19), (19, 19)]
    # no segments (RoboTwin's own data) -> none
    assert pairs.episode_segments(None, 50, "ep") == [] and pairs.episode_segments({"seed": 1}, 50, "ep") == []


def test_segment_pairs_min_length_and_kinds():
    info = {"segments": RECORDED, "save_freq": SAVE_FREQ}
    ep = _Episode(116, info)
    seg = pairs.episode_pairs(ep, "segment")
    assert [(p.start, p.end) for p in seg] == [(r["start_frame"], r["end_frame"]) for r in RECORDED]
    assert {p.pairing for p in seg} == {"segment"}  # the 5-frame gripper segment counts at the default 3
    assert [s.segment.instruction for s in pairs.episode_pairs(ep, "segment", min_segment_frames=6)] == \
        [r["instruction"] for r in RECORDED if r["end_frame"] - r["start_frame"] >= 6]
    inter = pairs.episode_pairs(ep, "interval")
    assert [(p.start, p.end, p.pairing) for p in inter] == [(0, 50, "interval"), (50, 100, "interval")]
    both = pairs.episode_pairs(ep, "both", interval=50, stride=25)
    assert [p.pairing for p in both] == ["interval"] * 3 + ["segment"] * 6
    assert both[-1].meta() == {"pairing": "segment", "segment": {"index": 5, "instruction": "raise the hammer",
                                                                 "start_frame": 100, "end_frame": 115,
                                                                 "frames_derived": False}}
    # no segments: segment pairing gives nothing, both gives the interval pairs
    plain = _Episode(116, None)
    assert pairs.episode_pairs(plain, "segment") == [] and len(pairs.episode_pairs(plain, "both")) == 2
    # short episodes: interval pairing refuses them, both keeps their segments
    short = _Episode(30, {"segments": old_style(RECORDED[:2]), "save_freq": 30})
    with pytest.raises(DataError, match="shorter than the interval"):
        pairs.episode_pairs(short, "interval")
    assert [(p.start, p.end) for p in pairs.episode_pairs(short, "both")] == [(0, 24), (24, 29)]
    with pytest.raises(DataError, match="no motion segment"):
        pairs.episode_pairs(_Episode(30, None), "both")


def test_bad_segments_are_named():
    with pytest.raises(DataError, match=r"ep7: scene_info segment 1 .*spans frames 48..120, outside the episode's "
                                        r"0..99"):
        pairs.episode_segments({"segments": [RECORDED[0], {**RECORDED[1], "end_frame": 120}]}, 100, "ep7")
    with pytest.raises(DataError, match="no 'save_freq'"):
        pairs.episode_segments({"segments": old_style(RECORDED)}, 116, "ep")
    with pytest.raises(DataError, match="segment 0 needs a non-empty 'instruction'"):
        pairs.episode_segments({"segments": [{"step": 0}]}, 116, "ep")
    with pytest.raises(DataError, match="must be a list"):
        pairs.episode_segments({"segments": {"step": 0}}, 116, "ep")
    with pytest.raises(DataError, match="start_frame: expected an integer"):
        pairs.episode_segments({"segments": [{**RECORDED[0], "start_frame": "0"}]}, 116, "ep")


def test_step_paraphrases_cover_every_step_the_sim_announces():
    tasks = Path(__file__).resolve().parents[1] / "frameplan_core" / "sim" / "tasks"
    said = set()
    for f in [*tasks.glob("*.py"), tasks.parent / "base_task.py"]:
        tree = ast.parse(f.read_text())
        for node in tree.body:  # a task's per-arm table of what it announces (block_handover's STEPS)
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["STEPS"]:
                said |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)
                         and isinstance(c.value, str) and " " in c.value}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "say" and f.name != "base_task.py":  # pick's say(reach) etc. are counted below
                texts = node.args[:1]
            elif node.func.attr == "pick":  # SimTask.pick(side, point, q, what, reach, grasp, lift=None, ...)
                texts = node.args[4:7] + [k.value for k in node.keywords if k.arg in ("reach", "grasp", "lift")]
            else:
                continue
            for t in texts:
                if isinstance(t, ast.Subscript) and getattr(t.value, "id", None) == "say":
                    continue  # an entry of the STEPS table, counted above
                assert isinstance(t, ast.Constant), f"{f.name}: {node.func.attr}() with a computed text"
                said.add(t.value)
    assert len(said) >= 20 and said == set(instructions.STEP_PARAPHRASES)
    seen = {s for t in instructions.TEMPLATES.values() for s in t["seen"]}
    unseen = {s for t in instructions.TEMPLATES.values() for s in t["unseen"]}
    for step, t in instructions.STEP_PARAPHRASES.items():
        assert t["seen"][0] == step and len(t["seen"]) >= 2 and len(t["unseen"]) >= 2  # the bridge's own words
        seen |= set(t["seen"])
        unseen |= set(t["unseen"])
    assert not seen & unseen
    text, source = instructions.choose_step("grasp the hammer", 0, "k")
    assert text in instructions.STEP_PARAPHRASES["grasp the hammer"]["seen"] and source == "step_paraphrases"
    assert instructions.choose_step("grasp the hammer", 0, "k") == (text, source)  # deterministic
    assert instructions.choose_step("wave hello", 0, "k") == ("wave hello", "step")


@pytest.fixture
def episodes(tmp_path):
    """hammer: 3 episodes with recorded spans; handover: 3 older episodes (steps only); stack: one RoboTwin 2.0
    episode without segments. 40..60 frames, save_freq 15."""
    root = tmp_path / "src"
    steps = [0, 150, 225, 400]
    hammer = ["reach for the hammer's handle", "grasp the hammer", "lift the hammer", "strike the block with the hammer"]
    handover = ["reach for the block with the left arm", "grasp the block with the left gripper", "lift the block",
                "release the block"]
    for task, texts, recorded in (("block_hammer_beat", hammer, True), ("block_handover", handover, False)):
        for e in range(3):
            n = 40 + 10 * e
            with robotwin.EpisodeWriter(root, task, "D435", e) as w:
                for t in range(n):
                    w.add_frame(frame(t, e))
                segs = [{"step": s, "instruction": x} for s, x in zip(steps, texts)]
                if recorded:
                    starts = [math.ceil(s / SAVE_FREQ) for s in steps]
                    for i, seg in enumerate(segs):
                        seg.update(start_frame=starts[i], end_frame=starts[i + 1] if i + 1 < len(starts) else n - 1)
                w.scene_info = {"seed": e, "save_freq": SAVE_FREQ, "segments": segs}
    robotwin2.write_episode(root, "blocks_stack_easy", "demo_clean", 0, [frame(t, 5) for t in range(45)],
                            {"seen": ["stack them up please"], "unseen": ["tower time"]})
    return root


def _samples(dst):
    return list(ip2p.IP2PDataset(dst))


def test_convert_segment_pairing(episodes, tmp_path, capsys):
    dst = tmp_path / "seg"
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(dst), "--pairing", "segment"]) == 0
    out = capsys.readouterr().out
    assert "pairing segment: segment" in out and "1 converted episode(s) gave no segment pair" in out
    ds = _samples(dst)
    # per episode: (0,10) 10 frames, (10,15) 5, (15,27) 12, (27,n-1): 4 segments each; stack has none
    assert len(ds) == 6 * 4
    for s in ds:
        seg = s.meta["segment"]
        a, b = s.meta["frames"]
        assert s.meta["pairing"] == "segment" and (a, b) == (seg["start_frame"], seg["end_frame"])
        assert seg["frames_derived"] == (s.meta["task"] == "block_handover")
        assert abs(int(s.input[..., 0].mean()) - 2 * a) <= 2 and abs(int(s.output[..., 0].mean()) - 2 * b) <= 2
        assert s.edit in instructions.STEP_PARAPHRASES[seg["instruction"]]["seen"]
        assert s.meta["instruction_source"] == "step_paraphrases"
    assert {tuple(s.meta["frames"]) for s in ds if s.meta["task"] == "block_handover"} == \
        {(0, 10), (10, 15), (15, 27), (27, 39), (27, 49), (27, 59)}
    assert len({s.edit for s in ds}) > 4  # paraphrases, not only the original step texts
    info = json.loads((dst / "frameplan_dataset.json").read_text())
    assert info["params"]["pairing"] == "segment" and info["summary"]["pairs_by_kind"] == {"segment": 24}
    assert info["summary"]["no_segment_pairs"] == [str(episodes / "blocks_stack_easy/demo_clean/data/episode0.hdf5")]
    # min length: the 5-frame grasp segments go at 6
    dst6 = tmp_path / "seg6"
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(dst6), "--pairing", "segment",
                 "--min-segment-frames", "6"]) == 0
    assert len(_samples(dst6)) == 6 * 3
    # unseen wording for a segment dataset comes from the step table
    dstu = tmp_path / "segu"
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(dstu), "--pairing", "segment",
                 "--instructions", "unseen"]) == 0
    assert all(s.edit in instructions.STEP_PARAPHRASES[s.meta["segment"]["instruction"]]["unseen"]
               for s in _samples(dstu))


def test_convert_both_pairings_share_splits(episodes, tmp_path):
    inter, both = tmp_path / "interval", tmp_path / "both"
    common = ["--interval", "20", "--val-fraction", "0.34", "--seed", "1"]
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(inter), *common]) == 0
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(both), "--pairing", "both", *common]) == 0
    ds_i, ds_b = _samples(inter), _samples(both)
    assert all(s.meta["pairing"] == "interval" for s in ds_i)
    kinds = [s.meta["pairing"] for s in ds_b]
    assert kinds.count("segment") == 24 and kinds.count("interval") == len(ds_i)
    # interval pairs are those of an interval-only conversion, with the same instructions
    assert sorted((s.meta["episode"], tuple(s.meta["frames"]), s.edit) for s in ds_i) == \
        sorted((s.meta["episode"], tuple(s.meta["frames"]), s.edit) for s in ds_b if s.meta["pairing"] == "interval")
    # an episode's interval and segment pairs are in one split, the one the interval-only dataset gave it
    sp_i, sp_b = ip2p.IP2PDataset(inter).splits, ip2p.IP2PDataset(both).splits
    assert sp_i["episodes"] == sp_b["episodes"] and sp_b["episodes"]["val"]
    by_episode: dict[str, set] = {}
    for s in ds_b:
        by_episode.setdefault(s.meta["episode"], set()).add((s.meta["split"], s.meta["pairing"]))
        assert s.id in sp_b["samples"][s.meta["split"]]
    for ep, got in by_episode.items():
        assert len({split for split, _ in got}) == 1, ep
        if "blocks_stack_easy" not in ep:
            assert {kind for _, kind in got} == {"interval", "segment"}, ep
    for split in ("train", "val"):
        assert {s.meta["pairing"] for s in ds_b if s.meta["split"] == split} == {"interval", "segment"}


def test_convert_pairing_is_for_ip2p_only(episodes, tmp_path, capsys):
    assert main(["convert", "robotwin", str(episodes), "--to", "grid", str(tmp_path / "g"), "--pairing",
                 "segment"]) == 1
    assert "convert pairing='segment': applies to ip2p datasets only" in capsys.readouterr().err
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(tmp_path / "s"),
                 "--min-segment-frames", "0"]) == 1
    assert "convert min_segment_frames=0: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "g").exists() and not (tmp_path / "s").exists()


def test_convert_max_start_keeps_an_episodes_opening(episodes, tmp_path, capsys):
    """--max-start: only pairs starting at or before the frame (the opening, where the instruction alone tells
    what comes), same instructions as the full conversion; refused below 0 and for grids."""
    full, opening = tmp_path / "full", tmp_path / "opening"
    common = ["--interval", "20", "--stride", "5", "--pairing", "both"]
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(full), *common]) == 0
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(opening), *common,
                 "--max-start", "10"]) == 0
    ds_f, ds_o = _samples(full), _samples(opening)
    assert ds_o and all(s.meta["frames"][0] <= 10 for s in ds_o) and any(s.meta["frames"][0] > 10 for s in ds_f)
    assert {(s.meta["episode"], tuple(s.meta["frames"]), s.edit) for s in ds_o} == \
        {(s.meta["episode"], tuple(s.meta["frames"]), s.edit) for s in ds_f if s.meta["frames"][0] <= 10}
    assert {s.meta["pairing"] for s in ds_o} == {"interval", "segment"}
    assert json.loads((opening / "frameplan_dataset.json").read_text())["params"]["max_start"] == 10
    capsys.readouterr()
    assert main(["convert", "robotwin", str(episodes), "--to", "ip2p", str(tmp_path / "n"), "--max-start", "-1"]) == 1
    assert "convert max_start=-1: must be >= 0" in capsys.readouterr().err
    assert main(["convert", "robotwin", str(episodes), "--to", "grid", str(tmp_path / "g"), "--max-start", "5"]) == 1
    assert "convert max_start=5: applies to ip2p datasets only" in capsys.readouterr().err
    assert not (tmp_path / "n").exists() and not (tmp_path / "g").exists()


def test_convert_paraphrase_key_scene_gives_twins_the_same_sentence(tmp_path, capsys):
    """--paraphrase-key scene: the twins of a swapped collection (same scene seed, the other giver) get the same
    paraphrase with only the side word changed; by episode (the default) the choice follows the episode instead.
    An episode without a scene seed is refused with a one-line error naming it."""
    from frameplan_core.data.instructions import naming_arm, swap_sides, templates

    root = tmp_path / "src"
    for e, (seed, side) in enumerate([(7, "left"), (7, "right"), (8, "right"), (8, "left"), (9, "left"), (9, "right")]):
        with robotwin.EpisodeWriter(root, "block_handover", "D435", e) as w:
            for t in range(40):
                w.add_frame(frame(t, e))
            w.instructions = naming_arm(templates("block_handover"), side, seed, "block_handover")
            w.scene_info = {"seed": seed, "save_freq": SAVE_FREQ}
    common = ["--interval", "20", "--stride", "5", "--val-fraction", "0"]
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(tmp_path / "s"), *common,
                 "--paraphrase-key", "scene"]) == 0
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(tmp_path / "e"), *common]) == 0
    assert json.loads((tmp_path / "s" / "frameplan_dataset.json").read_text())["params"]["paraphrase_key"] == "scene"

    def texts(dst):
        out = {}
        for s in _samples(dst):
            out[(int(s.meta["episode"].rsplit("episode", 1)[1]), s.meta["frames"][0])] = s.edit
        return out

    by_scene, by_episode = texts(tmp_path / "s"), texts(tmp_path / "e")
    starts = sorted({k[1] for k in by_scene})
    for a in (0, 2, 4):
        for t in starts:
            assert by_scene[(a + 1, t)] == swap_sides(by_scene[(a, t)]) != by_scene[(a, t)]
    assert any(by_episode[(a + 1, t)] != swap_sides(by_episode[(a, t)]) for a in (0, 2, 4) for t in starts)
    with robotwin.EpisodeWriter(root, "block_handover", "D435", 6) as w:
        for t in range(40):
            w.add_frame(frame(t, 6))
    capsys.readouterr()
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(tmp_path / "n"), *common,
                 "--paraphrase-key", "scene"]) == 1
    first = capsys.readouterr().err.splitlines()[0]  # the error, then the --skip-bad hint
    assert "episode6" in first and "paraphrase_key=scene needs the scene's collection seed" in first
    assert not (tmp_path / "n").exists()
    assert main(["convert", "robotwin", str(root), "--to", "grid", str(tmp_path / "g"), "--paraphrase-key",
                 "scene"]) == 1
    assert "applies to ip2p datasets only" in capsys.readouterr().err

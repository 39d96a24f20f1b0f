"""Instruction templates for the three RoboTwin tasks of seed 000, in RoboTwin 2.0's json shape
``{"seen": [...], "unseen": [...]}``: "seen" paraphrases are used for training pairs, "unseen" ones are held out to
test whether a model follows wording it was not trained on. Every choice is a pure function of (seed, key), so a
conversion run twice writes the same prompts.

``STEP_PARAPHRASES`` does the same for the *step* instructions of the simulated tasks: the exact texts the scripted
experts announce with ``SimTask.say`` (recorded as motion segments in scene_info.json, and published by the ROS sim
bridge on ``/frameplan/instruction``). Each step's "seen" list starts with the original text, so a model trained
on segment pairs has seen the bridge's wording verbatim; "unseen" variants are held out for evaluation."""
from __future__ import annotations

import hashlib
import logging
import random
import re
from pathlib import Path
from typing import Any

from frameplan_core.errors import DataError
from frameplan_core.jsonfile import read_json

log = logging.getLogger(__name__)

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "block_hammer_beat": {
        "seen": [
            "pick up the hammer and beat the block",
            "grab the hammer and strike the block with it",
            "use the hammer to hit the block on the table",
            "take the hammer and hammer the block",
            "lift the hammer and knock it down onto the block",
            "hold the hammer and tap the block",
            "beat the block with the hammer",
            "strike the block using the hammer",
            "grasp the hammer, then bring it down on the block",
            "pick the hammer up and hit the block once",
            "smash the block with the hammer",
            "use the arm to grab the hammer and beat the block",
        ],
        "unseen": [
            "whack the cube with the mallet",
            "get the hammer and give the block a knock",
            "bring the hammer's head down on top of the block",
            "pound the block using the tool with the handle",
            "hit the small block with the hammer lying next to it",
            "seize the hammer and bang it on the cube",
        ],
    },
    "block_handover": {
        "seen": [
            "hand the block over from the left arm to the right arm",
            "pass the block from one gripper to the other",
            "pick up the block with the left arm and give it to the right arm",
            "transfer the block between the two arms",
            "hand over the block and place it on the target",
            "grab the block, pass it to the other hand and put it down",
            "move the block across by handing it from left to right",
            "let the left arm pick the block and the right arm take it",
            "perform a handover of the block between the arms",
            "pass the block to the right gripper and set it on the mat",
            "pick the block up and hand it to the other arm",
            "use both arms to hand the block over",
        ],
        "unseen": [
            "give the cube from the left hand to the right hand",
            "relay the block across the table with both grippers",
            "the left gripper lifts the block, the right gripper receives it",
            "swap the block into the other hand and drop it at the goal",
            "exchange the block between the two robot arms",
            "carry the block over by passing it between grippers",
        ],
    },
    "blocks_stack_easy": {
        "seen": [
            "stack the blocks on top of each other",
            "put one block on top of the other block",
            "place the first block in the middle and stack the second on it",
            "build a stack of two blocks",
            "pick up a block and set it on the other block",
            "stack the two blocks in the centre of the table",
            "move the blocks together and stack them",
            "place a block onto the other to form a tower",
            "stack one cube on the other cube",
            "put the blocks in a pile, one above the other",
            "make a two-block tower on the table",
            "lift the block and stack it on the other one",
        ],
        "unseen": [
            "pile the cubes up into a tower",
            "set one cube neatly on top of its neighbour",
            "arrange the two blocks vertically",
            "rest the second block on the first",
            "build a small tower from the cubes",
            "position a block so that it sits on the other",
        ],
    },
}

STEP_PARAPHRASES: dict[str, dict[str, list[str]]] = {
    # block_hammer_beat
    "reach for the hammer's handle": {
        "seen": ["reach for the hammer's handle", "move the gripper to the hammer's handle",
                 "go to the handle of the hammer"],
        "unseen": ["approach the hammer grip", "bring the hand over to the hammer's handle"]},
    "grasp the hammer": {
        "seen": ["grasp the hammer", "close the gripper on the hammer", "grab the hammer"],
        "unseen": ["take hold of the hammer", "clamp the fingers around the hammer"]},
    "lift the hammer": {
        "seen": ["lift the hammer", "pick the hammer up off the table", "lift the hammer from the table"],
        "unseen": ["hoist the hammer up", "take the hammer off the table"]},
    "move the hammer above the block": {
        "seen": ["move the hammer above the block", "carry the hammer over the block", "hold the hammer over the block"],
        "unseen": ["position the hammer head above the cube", "bring the hammer to hover over the block"]},
    "strike the block with the hammer": {
        "seen": ["strike the block with the hammer", "hit the block with the hammer",
                 "bring the hammer down on the block"],
        "unseen": ["whack the cube with the hammer", "knock the hammer onto the block"]},
    "raise the hammer": {
        "seen": ["raise the hammer", "lift the hammer back up", "pull the hammer up again"],
        "unseen": ["draw the hammer back up", "take the hammer up after the hit"]},
    # block_handover
    "reach for the block with the left arm": {
        "seen": ["reach for the block with the left arm", "move the left gripper to the block",
                 "bring the left arm to the block"],
        "unseen": ["approach the cube with the left hand", "send the left arm over to the block"]},
    "grasp the block with the left gripper": {
        "seen": ["grasp the block with the left gripper", "close the left gripper on the block",
                 "grab the block with the left hand"],
        "unseen": ["take hold of the cube with the left gripper", "clamp the block in the left fingers"]},
    "lift the block": {
        "seen": ["lift the block", "pick the block up", "raise the block off the table"],
        "unseen": ["hoist the cube up", "take the block off the table"]},
    "bring the block to the middle": {
        "seen": ["bring the block to the middle", "move the block to the centre",
                 "carry the block to the middle of the table"],
        "unseen": ["take the cube over to the centre", "bring the block between the two arms"]},
    "reach for the block with the right arm": {
        "seen": ["reach for the block with the right arm", "move the right gripper to the block",
                 "bring the right arm to the block"],
        "unseen": ["approach the cube with the right hand", "send the right arm over to the block"]},
    "grasp the block with the right gripper": {
        "seen": ["grasp the block with the right gripper", "close the right gripper on the block",
                 "grab the block with the right hand"],
        "unseen": ["take hold of the cube with the right gripper", "clamp the block in the right fingers"]},
    "release the block with the left gripper": {
        "seen": ["release the block with the left gripper", "open the left gripper",
                 "let go of the block with the left hand"],
        "unseen": ["loosen the left gripper's hold on the block", "the left hand lets the cube go"]},
    "move the left arm away and carry the block to the right side": {
        "seen": ["move the left arm away and carry the block to the right side",
                 "pull the left arm back and take the block to the right",
                 "withdraw the left arm and move the block to the right side"],
        "unseen": ["retract the left hand and bring the cube over to the right",
                   "clear the left arm and carry the cube rightwards"]},
    "release the block with the right gripper": {
        "seen": ["release the block with the right gripper", "open the right gripper",
                 "let go of the block with the right hand"],
        "unseen": ["loosen the right gripper's hold on the block", "the right hand lets the cube go"]},
    "move the right arm away and carry the block to the left side": {
        "seen": ["move the right arm away and carry the block to the left side",
                 "pull the right arm back and take the block to the left",
                 "withdraw the right arm and move the block to the left side"],
        "unseen": ["retract the right hand and bring the cube over to the left",
                   "clear the right arm and carry the cube leftwards"]},
    "move the left arm away": {
        "seen": ["move the left arm away", "pull the left arm back", "withdraw the left arm"],
        "unseen": ["retract the left hand", "take the left arm out of the way"]},
    "release the block": {
        "seen": ["release the block", "let go of the block", "open the gripper and drop the block"],
        "unseen": ["set the cube free", "loosen the grip on the block"]},
    "move the right arm away": {
        "seen": ["move the right arm away", "pull the right arm back", "withdraw the right arm"],
        "unseen": ["retract the right hand", "take the right arm out of the way"]},
    # blocks_stack_easy
    "reach for the black block": {
        "seen": ["reach for the black block", "move the gripper to the black block", "go to the black block"],
        "unseen": ["approach the dark cube", "bring the hand over to the black block"]},
    "grasp the black block": {
        "seen": ["grasp the black block", "close the gripper on the black block", "grab the black block"],
        "unseen": ["take hold of the dark cube", "clamp the fingers around the black block"]},
    "lift the black block": {
        "seen": ["lift the black block", "pick the black block up", "raise the black block off the table"],
        "unseen": ["hoist the dark cube up", "take the black block off the table"]},
    "move the black block above the red block": {
        "seen": ["move the black block above the red block", "carry the black block over the red block",
                 "hold the black block over the red one"],
        "unseen": ["position the dark cube above the red cube", "bring the black block to hover over the red block"]},
    "put the black block on the red block": {
        "seen": ["put the black block on the red block", "place the black block on top of the red block",
                 "set the black block down on the red one"],
        "unseen": ["lower the dark cube onto the red cube", "rest the black block on top of the red block"]},
    "release the black block": {
        "seen": ["release the black block", "let go of the black block", "open the gripper to release the black block"],
        "unseen": ["set the dark cube free", "loosen the grip on the black block"]},
    "move the arm away": {
        "seen": ["move the arm away", "pull the arm back", "withdraw the arm"],
        "unseen": ["retract the hand", "take the arm out of the way"]},
}

# Short names used in seed 000's sample counts (hammer 100, handover 204, stack 298) and RoboTwin 2.0's names.
ALIASES = {"hammer": "block_hammer_beat", "handover": "block_handover", "stack": "blocks_stack_easy",
           "beat_block_hammer": "block_hammer_beat", "handover_block": "block_handover",
           "stack_blocks_two": "blocks_stack_easy"}


def canonical_task(task: str) -> str:
    return ALIASES.get(task, task)


def humanize(task: str) -> str:
    return canonical_task(task).replace("_", " ").strip()


def templates(task: str) -> dict[str, list[str]]:
    """The template lists for ``task`` (a copy). Unknown tasks raise DataError listing the known ones."""
    name = canonical_task(task)
    if name not in TEMPLATES:
        raise DataError(f"no instruction templates for task {task!r}; known tasks: {', '.join(sorted(TEMPLATES))}")
    return {k: list(v) for k, v in TEMPLATES[name].items()}


def check_instructions(obj: Any, where: str) -> dict[str, list[str]]:
    """Validate the ``{"seen": [...], "unseen": [...]}`` shape (non-empty 'seen', strings only)."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with 'seen' and 'unseen' lists, got {type(obj).__name__}")
    out = {}
    for key in ("seen", "unseen"):
        lst = obj.get(key, [])
        if not isinstance(lst, list) or not all(isinstance(s, str) and s.strip() for s in lst):
            raise DataError(f"{where}: {key!r} must be a list of non-empty strings")
        out[key] = list(lst)
    if not out["seen"]:
        raise DataError(f"{where}: 'seen' is missing or empty")
    for key, val in obj.items():
        if key not in out:
            out[key] = val
    return out


def load_instructions_file(path: str | Path) -> dict[str, list[str]]:
    return check_instructions(read_json(path, kind=None, what="instruction file"), str(path))


def _index(seed: int, key: str, n: int) -> int:
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def pick(candidates: list[str], seed: int, key: str) -> str:
    """One candidate, chosen by a hash of (seed, key): stable across runs and Python versions."""
    if not candidates:
        raise DataError(f"no instruction candidates to pick from (key {key!r})")
    return candidates[_index(seed, key, len(candidates))]


def choose(task: str, seed: int, key: str, split: str = "seen",
           episode_instructions: dict | None = None) -> tuple[str, str]:
    """(instruction, source) for one sample: the episode's own instruction json when it has ``split`` entries,
    else the task templates, else (unknown task) the task name in words with a warning."""
    if episode_instructions and episode_instructions.get(split):
        return pick(episode_instructions[split], seed, key), "episode"
    name = canonical_task(task)
    if name in TEMPLATES:
        return pick(TEMPLATES[name][split], seed, key), "templates"
    log.warning("no instruction templates for task %r: using its name %r as the instruction", task, humanize(task))
    return humanize(task), "task_name"


def step_paraphrases(step: str) -> dict[str, list[str]] | None:
    """The seen/unseen paraphrases of a step instruction (a copy), or None for a step the table does not know."""
    t = STEP_PARAPHRASES.get(" ".join(str(step).split()))
    return {k: list(v) for k, v in t.items()} if t else None


def choose_step(step: str, seed: int, key: str, split: str = "seen") -> tuple[str, str]:
    """(instruction, source) for a segment pair: a ``split`` paraphrase of the step instruction chosen by (seed,
    key) (source ``step_paraphrases``), or the step text itself (source ``step``) when the table has none."""
    t = step_paraphrases(step)
    if t and t.get(split):
        return pick(t[split], seed, key), "step_paraphrases"
    if split == "unseen":
        log.warning("no unseen paraphrases for step instruction %r: using it verbatim", step)
    return step, "step"


# How an instructed episode (task config ``expert_strategy: instructed``) names its arm: appended to each template.
# "seen" phrasings are for training pairs, "unseen" ones test wording never trained on, as for the templates.
ARM_PHRASES: dict[str, list[str]] = {
    "seen": ["with the {side} arm", "using the {side} arm", "with the robot's {side} arm", "using only the {side} arm",
             "and do it with the {side} arm", "with your {side} arm"],
    "unseen": ["using the {side} gripper", "by means of the arm on the {side}", "with the {side}-hand manipulator"],
}


# block_handover names the giver, the arm that picks the block up (the other one takes it to its side's mat).
GIVER_PHRASES: dict[str, list[str]] = {
    "seen": ["starting with the {side} arm", "picking it up with the {side} arm", "the {side} arm picks it up first",
             "with the {side} arm as the giver", "lifting it with the {side} arm first", "the {side} arm gives it"],
    "unseen": ["the {side} gripper grabs it first", "letting the arm on the {side} begin",
               "with the {side}-hand manipulator handing it off"],
}


# block_handover templates that tell the direction with side words ("from the left arm to the right arm"): in an
# instructed episode each becomes its direction-free form, and like every other template gets the giver as a suffix
# (``GIVER_PHRASES``), so every paraphrase names the giver the way the other two tasks name their arm: one side word
# in a short phrase at the end. Word order alone moved the text embedding 2.6x less than one arm word; one side word
# inside the sentence (session 43) was not read by the fine-tuned predictor (docs/eval/closed_loop.md).
NEUTRAL_SENTENCES: dict[str, str] = {
    "hand the block over from the left arm to the right arm": "hand the block over from one arm to the other",
    "pick up the block with the left arm and give it to the right arm":
        "pick up the block with one arm and give it to the other arm",
    "move the block across by handing it from left to right": "move the block across by handing it over",
    "let the left arm pick the block and the right arm take it":
        "let one arm pick the block and the other arm take it",
    "pass the block to the right gripper and set it on the mat":
        "pass the block to the other gripper and set it on the mat",
    "give the cube from the left hand to the right hand": "give the cube from one hand to the other hand",
    "the left gripper lifts the block, the right gripper receives it":
        "one gripper lifts the block, the other gripper receives it",
}


def swap_sides(text: str) -> str:
    """``text`` with the words left and right exchanged (a handover sentence in the other direction)."""
    return re.sub(r"\b(left|right)\b", lambda m: "right" if m.group(1) == "left" else "left", text)


def naming_arm(instructions: dict[str, list[str]], side: str, seed: int, task: str = "") -> dict[str, list[str]]:
    """The episode's instruction json with every paraphrase naming the arm to use (``side``: left or right), each
    with an arm phrasing chosen by (seed, paraphrase) from the same split. block_handover names the giver with a
    giver phrasing: a template that tells the direction loses it first (``NEUTRAL_SENTENCES``); a sentence of
    another origin that tells the direction is kept, turned around for a right giver."""
    if side not in ("left", "right"):
        raise DataError(f"naming_arm: side must be 'left' or 'right', got {str(side)[:40]!r}")
    handover = canonical_task(task) == "block_handover"
    table = GIVER_PHRASES if handover else ARM_PHRASES

    def named(text: str, phrases: list[str]) -> str:
        if handover and text in NEUTRAL_SENTENCES:
            text = NEUTRAL_SENTENCES[text]
        swapped = swap_sides(text) if handover else text
        if swapped != text:  # the sentence tells the direction itself (written for a left giver)
            return text if side == "left" else swapped
        return f"{text}, {pick(phrases, seed, text).format(side=side)}"

    out = {}
    for split, lst in instructions.items():
        phrases = table.get(split)
        out[split] = [named(t, phrases) for t in lst] if isinstance(lst, list) and phrases is not None else lst
    return out


def for_episode(task: str, seed: int) -> dict[str, list[str]]:
    """The instruction json to store with a newly collected episode: the task templates in a seed-shuffled order
    (as RoboTwin 2.0 stores a per-episode list)."""
    t = templates(task)
    rng = random.Random(f"{seed}:{canonical_task(task)}")
    for lst in t.values():
        rng.shuffle(lst)
    return t

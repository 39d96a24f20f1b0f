"""InstructPix2Pix and grid datasets, episode splits, and the convert / inspect CLIs end to end."""
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from frameplan_core import grid
from frameplan_cli.main import main
from frameplan_core.data import instructions, ip2p, robotwin, robotwin2, splits
from frameplan_core.data.grid_samples import GridDataset
from frameplan_core.errors import DataError
from frameplan_core.image import read_image

H, W = 32, 48


def frame(t: int, ep: int = 0) -> dict:
    """Flat colours (JPEG-safe): red = 2t encodes the frame number, blue = 30*episode."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 2 * t
    rgb[..., 1] = 128
    rgb[..., 2] = 30 * ep
    return {"observation": {"head_camera": {"rgb": rgb, "depth": np.full((H, W), float(t))},
                            "front_camera": {"rgb": 255 - rgb}},
            "pointcloud": [], "joint_action": np.full(14, float(t)), "endpose": np.zeros(14)}


@pytest.fixture
def source(tmp_path):
    """Two 1.0 tasks (3 episodes each, 25..45 frames) and one 2.0 episode with its own instructions."""
    root = tmp_path / "robotwin"
    lengths = {}
    for task in ("block_hammer_beat", "block_handover"):
        for e in range(3):
            n = 25 + 10 * e
            with robotwin.EpisodeWriter(root, task, "D435", e) as w:
                for t in range(n):
                    w.add_frame(frame(t, e))
            lengths[f"{task}_D435_pkl/episode{e}"] = n
    own = {"seen": ["stack them up please"], "unseen": ["tower time"]}
    robotwin2.write_episode(root, "blocks_stack_easy", "demo_clean", 0, [frame(t, 5) for t in range(30)], own)
    lengths["blocks_stack_easy/demo_clean/data/episode0.hdf5"] = 30
    return root, lengths


def test_convert_ip2p_end_to_end(source, tmp_path, capsys):
    root, lengths = source
    dst = tmp_path / "ip2p"
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(dst), "--interval", "10",
                 "--val-fraction", "0.34", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "block_hammer_beat" in out and "skipped" in out
    seeds = json.loads((dst / "seeds.json").read_text())
    expected = sum(len(range(0, n - 10, 10)) for n in lengths.values())
    assert len(seeds) == expected and all(d == s[0] for d, s in seeds)
    ds = ip2p.IP2PDataset(dst)
    assert len(ds) == expected
    sp = ds.splits
    train_eps, val_eps = set(sp["episodes"]["train"]), set(sp["episodes"]["val"])
    assert not train_eps & val_eps and train_eps | val_eps == set(lengths)
    assert len(val_eps) == 2  # one of three per 1.0 task; the single 2.0 episode stays in train
    for s in ds:
        a, b = s.meta["frames"]
        assert b - a == 10
        assert abs(int(s.input[..., 0].mean()) - 2 * a) <= 2 and abs(int(s.output[..., 0].mean()) - 2 * b) <= 2
        assert s.meta["episode"] in (train_eps if s.meta["split"] == "train" else val_eps)
        assert s.id in sp["samples"][s.meta["split"]]
        assert (dst / s.id / f"{s.id}_0.jpg").is_file() and (dst / s.id / f"{s.id}_1.jpg").is_file()
        prompt = json.loads((dst / s.id / "prompt.json").read_text())
        assert set(prompt) == {"input", "edit", "output"} and prompt["edit"] == s.edit
        if s.meta["task"] == "blocks_stack_easy":
            assert s.edit == "stack them up please" and s.meta["instruction_source"] == "episode"
        else:
            assert s.edit in instructions.templates(s.meta["task"])["seen"]
    assert len(ip2p.IP2PDataset(dst, split="val")) + len(ip2p.IP2PDataset(dst, split="train")) == expected

    # deterministic: a second run writes byte-identical files
    dst2 = tmp_path / "ip2p2"
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(dst2), "--interval", "10",
                 "--val-fraction", "0.34", "--seed", "3"]) == 0
    files = sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dst2) for p in dst2.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != "frameplan_dataset.json":  # records the destination-independent params and summary too
            assert (dst / rel).read_bytes() == (dst2 / rel).read_bytes(), rel
    # an existing destination is not replaced without --overwrite
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(dst), "--interval", "5"]) == 1
    assert len(ip2p.IP2PDataset(dst)) == expected
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(dst), "--interval", "20", "--overwrite",
                 "--tasks", "handover", "--size", "16", "--camera", "front_camera"]) == 0
    ds = ip2p.IP2PDataset(dst)
    assert len(ds) == 1 + 1 + 2 and {s.meta["task"] for s in ds} == {"block_handover"}  # 25, 35, 45 frames
    assert ds[0].input.shape == (16, 16, 3) and ds[0].meta["camera"] == "front_camera"


def test_convert_grid_end_to_end(source, tmp_path):
    root, lengths = source
    dst = tmp_path / "grid"
    assert main(["convert", "robotwin", str(root), "--to", "grid", str(dst), "--val-fraction", "0"]) == 0
    ds = GridDataset(dst)
    assert len(ds) == len(lengths)
    assert ds.splits["episodes"]["val"] == [] and len(ds.splits["samples"]["train"]) == len(lengths)
    for i in range(len(ds)):
        s = ds[i]
        n = s.meta["episode_frames"]
        assert s.meta["frames"] == grid.frame_indices(n)
        assert s.output.shape == (3 * H, 3 * W, 3) and s.input.shape == s.output.shape
        cells = ds.frames(i)
        exact = s.meta["format"] == "robotwin1"  # PNG grids of pickled frames are lossless
        for k, t in enumerate(s.meta["frames"]):
            want = frame(t)["observation"]["head_camera"]["rgb"][..., 0]
            if exact:
                assert np.array_equal(cells[k][..., 0], want)
            else:
                assert abs(int(cells[k][..., 0].mean()) - int(want.mean())) <= 2
        assert np.array_equal(s.input[:H, :W], cells[0])
        assert s.input[H:].max() == 0 and s.input[:H, W:].max() == 0
    with pytest.raises(DataError, match="format is 'grid'"):
        ip2p.IP2PDataset(dst)


def test_convert_as_a_library_call(source, tmp_path):
    """data/convert.py without the CLI: the same dataset as `frameplan convert`, a result that says what it wrote,
    option errors naming the option, and an unreadable episode as BadEpisode unless skip_bad."""
    from frameplan_core.data.convert import BadEpisode, ConvertOptions, convert

    root, lengths = source
    opts = ConvertOptions(to="ip2p", interval=10, val_fraction=0.34, seed=3)
    r = convert(root, tmp_path / "lib", opts, progress=False)
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(tmp_path / "cli"), "--interval", "10",
                 "--val-fraction", "0.34", "--seed", "3"]) == 0
    files = sorted(p.relative_to(tmp_path / "lib") for p in (tmp_path / "lib").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert r.samples == len(ip2p.IP2PDataset(tmp_path / "lib")) == sum(len(range(0, n - 10, 10))
                                                                        for n in lengths.values())
    assert r.episodes_found == len(lengths) and sum(r.converted.values()) == len(lengths) and not r.skipped
    assert r.lines()[0].startswith(f"frameplan convert: wrote {r.samples} pairs to {tmp_path / 'lib'}")
    assert [len(r.split_episodes[s]) for s in ("train", "val")] == [5, 2]
    with pytest.raises(DataError, match=r"convert stride=0: must be >= 1"):
        convert(root, tmp_path / "x", ConvertOptions(stride=0))
    bad = root / "block_hammer_beat_D435_pkl" / "episode1" / "0.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(BadEpisode, match="0.pkl"):
        convert(root, tmp_path / "y", opts, progress=False)
    assert not (tmp_path / "y").exists()
    r = convert(root, tmp_path / "y", ConvertOptions(to="grid", skip_bad=True), progress=False)
    assert [p for p, _ in r.skipped] == [str(bad.parent)] and r.samples == len(lengths) - 1


def test_folder_dataset_png_round_trip_and_foreign_layout(tmp_path):
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8), rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
             for _ in range(3)]
    with ip2p.FolderDatasetWriter(tmp_path / "ds", ext=".png", params={"seed": 0}) as w:
        for k, (a, b) in enumerate(pairs):
            w.add(a, b, f"edit {k}", "in", "out", meta={"task": "t"}, split="val" if k == 2 else "train",
                  episode=f"ep{k // 2}")
    ds = ip2p.IP2PDataset(tmp_path / "ds")
    for k, s in enumerate(ds):
        assert np.array_equal(s.input, pairs[k][0]) and np.array_equal(s.output, pairs[k][1])
        assert (s.edit, s.input_caption, s.output_caption) == (f"edit {k}", "in", "out")
    assert ds.splits["episodes"] == {"train": ["ep0"], "val": ["ep1"], "test": []}
    with pytest.raises(DataError, match="already in split"):
        with ip2p.FolderDatasetWriter(tmp_path / "bad") as w:
            w.add(pairs[0][0], pairs[0][1], "x", split="train", episode="e")
            w.add(pairs[0][0], pairs[0][1], "x", split="val", episode="e")
    assert not (tmp_path / "bad").exists()
    # InstructPix2Pix's own layout: several seeds per prompt folder, no frameplan files
    foreign = tmp_path / "foreign"
    (foreign / "p0").mkdir(parents=True)
    from frameplan_core.image import write_image

    for seed in (11, 12):
        write_image(foreign / "p0" / f"{seed}_0.jpg", pairs[0][0])
        write_image(foreign / "p0" / f"{seed}_1.jpg", pairs[0][1])
    (foreign / "p0" / "prompt.json").write_text(json.dumps({"input": "a", "edit": "make it b", "output": "b"}))
    (foreign / "seeds.json").write_text(json.dumps([["p0", [11, 12]]]))
    ds = ip2p.IP2PDataset(foreign)
    assert ds.ids == ["p0/11", "p0/12"] and ds[1].edit == "make it b" and ds[1].input.shape == (8, 10, 3)


def test_grown_dataset_keeps_earlier_splits(source, tmp_path):
    """Episodes added after a first conversion are split among themselves; earlier episodes never change split."""
    root, lengths = source
    first = tmp_path / "v1"
    assert main(["convert", "robotwin", str(root), "--to", "grid", str(first), "--val-fraction", "0.34"]) == 0
    before = splits.episode_splits(GridDataset(first).splits)
    for e in range(3, 9):  # more episodes of one task arrive
        with robotwin.EpisodeWriter(root, "block_handover", "D435", e) as w:
            for t in range(25):
                w.add_frame(frame(t, e))
    grown = tmp_path / "v2"
    assert main(["convert", "robotwin", str(root), "--to", "grid", str(grown), "--val-fraction", "0.34",
                 "--test-fraction", "0.34", "--keep-splits", str(first)]) == 0
    after = splits.episode_splits(GridDataset(grown).splits)
    assert {k: after[k] for k in before} == before
    new = [after[f"block_handover_D435_pkl/episode{e}"] for e in range(3, 9)]
    assert (new.count("val"), new.count("test"), new.count("train")) == (2, 2, 2)
    assert main(["convert", "robotwin", str(root), "--to", "grid", str(tmp_path / "v3"),
                 "--keep-splits", str(tmp_path / "nowhere")]) != 0
    with pytest.raises(DataError, match="kept splits"):
        splits.assign({"a/0": "a"}, keep={"a/0": "holdout"})


def test_splits_deterministic_disjoint_order_independent():
    eps = {f"task{t}/ep{i}": f"task{t}" for t in range(3) for i in range(20)}
    a = splits.assign(eps, 0.2, seed=5, test_fraction=0.1)
    b = splits.assign(dict(reversed(list(eps.items()))), 0.2, seed=5, test_fraction=0.1)
    assert a == b
    for t in range(3):
        mine = [v for k, v in a.items() if k.startswith(f"task{t}/")]
        assert (mine.count("val"), mine.count("test"), mine.count("train")) == (4, 2, 14)
    assert a != splits.assign(eps, 0.2, seed=6, test_fraction=0.1)
    assert set(splits.assign({"x/ep0": "x"}, 0.5).values()) == {"train"}
    assert list(splits.assign({"x/0": "x", "x/1": "x"}, 0.9).values()).count("train") == 1
    data = splits.build(a, {f"s{k}": ep for k, ep in enumerate(eps)}, 5, 0.2, 0.1)
    all_samples = [s for v in data["samples"].values() for s in v]
    assert len(all_samples) == len(set(all_samples)) == len(eps)
    with pytest.raises(DataError, match="in both"):
        splits.check_disjoint({"episodes": {"train": ["e1"], "val": ["e1"]}}, "x")
    with pytest.raises(DataError):
        splits.assign(eps, 1.5)


def test_inspect_every_kind(source, tmp_path, capsys):
    root, _ = source
    from frameplan_cli.verbs.inspect import describe

    dst = tmp_path / "ip2p"
    assert main(["convert", "robotwin", str(root), "--to", "ip2p", str(dst), "--interval", "10"]) == 0
    gdst = tmp_path / "grid"
    assert main(["convert", "robotwin", str(root), "--to", "grid", str(gdst)]) == 0
    ckpt = tmp_path / "ckpt"
    (ckpt / "unet").mkdir(parents=True)
    (ckpt / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInstructPix2PixPipeline"}))
    (ckpt / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    save_file({"a.weight": np.zeros((4, 3), np.float32), "b.bias": np.zeros(5, np.float32)},
              str(ckpt / "unet" / "diffusion_pytorch_model.safetensors"))
    torch.save({"state_dict": {"w": torch.zeros(2, 2), "v": torch.zeros(3)}}, tmp_path / "m.ckpt")
    cases = {
        dst: ("ip2p_dataset", "samples"),
        gdst: ("grid_dataset", "samples"),
        root: ("episode_collection", "episodes"),
        root / "block_handover_D435_pkl" / "episode2": ("robotwin1_episode", "frames"),
        root / "blocks_stack_easy" / "demo_clean" / "data" / "episode0.hdf5": ("robotwin2_episode", "frames"),
        ckpt: ("checkpoint", "parameters"),
        ckpt / "unet" / "diffusion_pytorch_model.safetensors": ("weights", "parameters"),
        tmp_path / "m.ckpt": ("weights", "parameters"),
    }
    for path, (kind, field) in cases.items():
        info, images, _ = describe(path)
        assert info["kind"] == kind, path
        assert info[field]
    assert describe(ckpt)[0]["parameters"] == 17
    assert describe(tmp_path / "m.ckpt")[0]["parameters"] == 7
    assert describe(root / "block_handover_D435_pkl" / "episode2")[0]["frames"] == 45
    assert describe(dst)[0]["input_size"] == [H, W, 3]

    sheet = tmp_path / "sheets" / "ip2p.png"
    capsys.readouterr()
    assert main(["inspect", str(dst), "--sheet", str(sheet), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["contact_sheet"] == str(sheet) and read_image(sheet).shape[2] == 3
    assert main(["inspect", str(root / "block_handover_D435_pkl" / "episode2"), "--sheet",
                 str(tmp_path / "ep.png"), "--check"]) == 0
    assert "contact sheet written to" in capsys.readouterr().out and (tmp_path / "ep.png").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 1
    assert "not an episode, dataset or checkpoint" in capsys.readouterr().err


def test_overwrite_after_an_interrupted_overwrite(tmp_path):
    """A previous version parked by an overwrite that was killed before cleaning up (``.<name>.old``) must not make
    every later --overwrite fail (and throw away the freshly built dataset)."""
    img = np.zeros((8, 10, 3), np.uint8)
    for k in range(2):
        with ip2p.FolderDatasetWriter(tmp_path / "ds", ext=".png", params={"seed": 0}, overwrite=True) as w:
            w.add(img + k, img, f"edit {k}", episode="e0")
        if k == 0:
            stale = tmp_path / ".ds.old"
            stale.mkdir()
            (stale / "seeds.json").write_text("[]")
    ds = ip2p.IP2PDataset(tmp_path / "ds")
    assert len(ds) == 1 and ds[0].edit == "edit 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.old", "ds"]

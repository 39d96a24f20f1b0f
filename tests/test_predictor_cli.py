"""`frameplan predict` end to end with a tiny checkpoint saved by the test."""
import numpy as np
import pytest

from frameplan_cli.main import main
from frameplan_core.image import read_image, write_image
from frameplan_core.predictor import FramePredictor, PredictorConfig


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cfg = PredictorConfig.preset("tiny-clip")
    cfg.resolution = 64
    path = tmp_path_factory.mktemp("cli") / "tiny"
    FramePredictor.from_config(cfg.validate(), seed=0).save_pretrained(path)
    return path


def test_predict_cli_writes_prediction_and_side_by_side(ckpt, tmp_path):
    write_image(tmp_path / "in.png", np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    rc = main(["predict", "--image", str(tmp_path / "in.png"), "--instruction", "strike the block with the hammer",
               "--out", str(tmp_path / "out.png"), "--model", str(ckpt), "--steps", "2", "--sampler", "ddim"])
    assert rc == 0
    out, side = read_image(tmp_path / "out.png"), read_image(tmp_path / "out_side.png")
    assert out.shape == (64, 64, 3) and side.shape[0] == 64 and side.shape[1] > 128
    rc = main(["predict", "--image", str(tmp_path / "in.png"), "--instruction", "x", "--out", str(tmp_path / "o2.png"),
               "--model", str(ckpt), "--steps", "1", "--output-size", "input"])
    assert rc == 0 and read_image(tmp_path / "o2.png").shape == (240, 320, 3)
    rc = main(["predict", "--image", str(tmp_path / "in.png"), "--instruction", "x", "--out", str(tmp_path / "o3.png"),
               "--model", str(ckpt), "--steps", "1", "--output-size", "input", "--negative", "y"])
    assert rc == 0 and not np.array_equal(read_image(tmp_path / "o3.png"), read_image(tmp_path / "o2.png"))


def test_predict_cli_errors(ckpt, tmp_path, capsys):
    write_image(tmp_path / "in.png", np.zeros((32, 32, 3), np.uint8))
    assert main(["predict", "--image", str(tmp_path / "nope.png"), "--instruction", "x",
                 "--out", str(tmp_path / "o.png"), "--model", str(ckpt)]) == 1
    assert "image file not found" in capsys.readouterr().err
    assert main(["predict", "--image", str(tmp_path / "in.png"), "--instruction", " ",
                 "--out", str(tmp_path / "o.png"), "--model", str(ckpt)]) == 1
    assert "empty instruction" in capsys.readouterr().err
    assert main(["predict", "--image", str(tmp_path / "in.png"), "--instruction", "x", "--negative", "",
                 "--out", str(tmp_path / "o.png"), "--model", str(ckpt)]) == 1
    assert "negative_instruction[0]: empty instruction" in capsys.readouterr().err
    assert main(["predict", "--image", str(tmp_path / "in.png"), "--instruction", "x",
                 "--out", str(tmp_path / "o.png"), "--model", str(tmp_path / "none")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()

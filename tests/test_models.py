"""frameplan_core.models: one load_model for the predictor, the planner and the policy with its goal model, what it
gives back, the steps check and the warm-up. Small random models saved to tmp (no trained weights needed)."""
import numpy as np
import pytest

from frameplan_core.errors import ConfigError, ModelError
from frameplan_core.models import PolicyModels, describe, load_model, steps_refusal, warmup

REST = [0.0, -0.25, 0.0, -2.3, 0.0, 2.05, np.pi / 4, 1.0] * 2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from frameplan_core.policy import GoalPolicy, PolicyConfig
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    root = tmp_path_factory.mktemp("models")
    pc = PredictorConfig.preset("tiny")
    pc.resolution = 64
    FramePredictor.from_config(pc, seed=0, device="cpu").save_pretrained(root / "predictor")
    stats = {"state_mean": REST, "state_std": [1.0] * 16, "action_mean": np.zeros((8, 16)).tolist(),
             "action_std": np.full((8, 16), 0.2).tolist()}
    for name in ("tiny", "tiny-nogoal"):
        cfg = PolicyConfig.preset(name, image_size=64, channels=[8, 16, 16, 16], hidden=64, state_hidden=16,
                                  stats=stats)
        GoalPolicy.from_config(cfg, seed=0).save_pretrained(root / name)
    return root


def test_one_loader_for_every_kind(folders):
    from frameplan_core.predictor import FramePredictor

    pred = load_model("predictor", str(folders / "predictor"), "cpu")
    assert isinstance(pred, FramePredictor) and "UNet" in describe(pred)
    models = load_model("policy", str(folders / "predictor"), "cpu", policy=str(folders / "tiny"))
    assert isinstance(models, PolicyModels) and isinstance(models.goal_model, FramePredictor)
    assert models.goal_source == "predictor" and abs(models.step_s - 0.06) < 1e-12
    assert "goals from the predictor" in models.describe()
    nogoal = load_model("policy", "/nonexistent/goal/model", "cpu", policy=str(folders / "tiny-nogoal"))
    assert nogoal.goal_model is None and "no goal model" in nogoal.describe()  # the goal model is never loaded
    warmup(models, "policy")
    warmup(pred, "predictor")


def test_bad_kinds_and_missing_models_say_what(folders):
    with pytest.raises(ConfigError, match="model kind 'predicter'"):
        load_model("predicter")
    with pytest.raises(ConfigError, match="goal source 'oracle'"):
        load_model("policy", goal="oracle")
    with pytest.raises(ModelError, match="/nonexistent/predictor"):
        load_model("predictor", "/nonexistent/predictor", "cpu")


def test_steps_refusal_checks_the_model_that_will_run_them(folders):
    pred = load_model("predictor", str(folders / "predictor"), "cpu")
    assert steps_refusal(pred, "predictor", 0) is None and steps_refusal(pred, "predictor", 8) is None
    assert "fewer steps" in steps_refusal(pred, "predictor", 1000)
    models = PolicyModels(load_model("policy", "", "cpu", policy=str(folders / "tiny-nogoal")).policy, pred,
                          "predictor")
    assert "fewer steps" in steps_refusal(models, "policy", 1000)  # policy mode: its goal model's schedule
    assert steps_refusal(PolicyModels(models.policy, None, "predictor"), "policy", 1000) is None
    assert steps_refusal(None, None, 1000) is None

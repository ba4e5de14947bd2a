"""Options: recipes, hyp files, CLI flags and fit() keywords share one validated list."""

from __future__ import annotations

import argparse

import pytest
import yaml

from accelyolo.core.config import RECIPES_DIR, ConfigError, TrainConfig, load_config, save_config
from accelyolo.core.flags import add_config_arguments, config_from_args


def test_defaults_are_yolov5_scratch_low():
    cfg = load_config()
    assert (cfg.lr0, cfg.lrf, cfg.momentum, cfg.weight_decay) == (0.01, 0.01, 0.937, 0.0005)
    assert (cfg.warmup_epochs, cfg.warmup_momentum, cfg.warmup_bias_lr) == (3.0, 0.8, 0.1)
    assert (cfg.hsv_h, cfg.hsv_s, cfg.hsv_v, cfg.translate, cfg.scale, cfg.fliplr, cfg.mosaic) == (
        0.015,
        0.7,
        0.4,
        0.1,
        0.5,
        0.5,
        1.0,
    )
    assert cfg.nbs == 64


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown option 'epoch'.*'epochs'"):
        load_config(epoch=3)


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match="'batch_size' must be int"):
        load_config(batch_size="sixteen")
    with pytest.raises(ConfigError, match="'imgsz' must be a positive multiple of 32"):
        load_config(imgsz=100)


def test_ints_are_accepted_for_floats():
    assert load_config(lr0=1).lr0 == 1.0


def test_recipe_with_hyp_file_and_relative_data(tmp_path):
    (tmp_path / "hyp.yaml").write_text("lr0: 0.02\nmosaic: 0.5\n")
    (tmp_path / "recipe.yaml").write_text("hyp: hyp.yaml\ndata: d/data.yaml\nepochs: 7\n")
    cfg = load_config(tmp_path / "recipe.yaml", epochs=9)
    assert cfg.lr0 == 0.02 and cfg.mosaic == 0.5
    assert cfg.epochs == 9  # keywords win over the recipe
    assert cfg.data == str((tmp_path / "d" / "data.yaml").resolve())


def test_unknown_key_in_recipe_names_the_file(tmp_path):
    (tmp_path / "r.yaml").write_text("epochs: 3\nlr_0: 0.1\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*'lr_0'.*'lr0'"):
        load_config(tmp_path / "r.yaml")
    (tmp_path / "h.yaml").write_text("hyp: {hsv_x: 0.1}\n")
    with pytest.raises(ConfigError, match="unknown hyperparameter 'hsv_x'"):
        load_config(tmp_path / "h.yaml")


def test_shipped_recipes_and_hyp_files_load():
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        load_config(path)
    high = load_config(hyp=str(RECIPES_DIR / "hyp" / "scratch-high.yaml"))
    assert (high.lrf, high.scale, high.mixup, high.obj, high.cls) == (0.1, 0.9, 0.1, 0.7, 0.3)


def test_train_help_renders_every_field_help_verbatim():
    """argparse %-formats help strings: a field help with a percent sign must still render (it did not)."""
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "saves ~3% of a step" in text and "--retain-memory" in text


def test_cli_flags_are_generated_from_fields():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(
        ["--epochs", "3", "--batch-size", "8", "--no-rect-val", "--resume", "--log-with", "none", "--lr0", "0.02"]
    )
    recipe, overrides = config_from_args(args)
    assert recipe is None
    assert overrides == {
        "epochs": 3,
        "batch_size": 8,
        "rect_val": False,
        "resume": "auto",
        "log_with": None,
        "lr0": 0.02,
    }
    flags = {a for action in parser._actions for a in action.option_strings}
    for needed in (
        "--recipe",
        "--data",
        "--model",
        "--weights",
        "--epochs",
        "--imgsz",
        "--batch-size",
        "--workers",
        "--optimizer",
        "--seed",
        "--deterministic",
        "--project",
        "--name",
        "--exist-ok",
        "--resume",
        "--patience",
        "--close-mosaic",
        "--save-period",
        "--val-interval",
        "--freeze",
        "--multi-scale",
        "--label-smoothing",
        "--cache",
        "--log-with",
    ):
        assert needed in flags


def test_args_yaml_round_trip(tmp_path):
    cfg = load_config(epochs=5, data="x.yaml")
    save_config(cfg, tmp_path / "args.yaml")
    again = load_config(**yaml.safe_load((tmp_path / "args.yaml").read_text()))
    assert again == cfg
    assert isinstance(again, TrainConfig)


# ------------------------------------------------------------------------------------ options by concept


def test_every_option_belongs_to_exactly_one_concept():
    import dataclasses

    from accelyolo.core.config import CONCEPTS, TrainConfig

    listed = [key for keys in CONCEPTS.values() for key in keys]
    assert sorted(listed) == sorted(f.name for f in dataclasses.fields(TrainConfig))
    assert len(listed) == len(set(listed))


def test_a_recipe_may_group_options_by_concept(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: yolov8n\nimgsz: 320\nlr0: 0.02\nwarmup_epochs: 1.0\nmosaic: 0.5\nconf_thres: 0.01\n")
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text(
        "core: {model: yolov8n}\ndata: {imgsz: 320}\noptimisation: {lr0: 0.02, warmup_epochs: 1.0}\n"
        "augmentation: {mosaic: 0.5}\nevaluation: {conf_thres: 0.01}\n"
    )
    assert load_config(grouped) == load_config(flat)
    cfg = load_config(grouped, optimisation={"lr0": 0.03}, batch=8)  # fit() keywords may be grouped too
    assert cfg.concept("optimisation")["lr0"] == 0.03 and cfg.concept("data")["batch_size"] == 8
    assert load_config(data="some.yaml").data == "some.yaml"  # a string is the option, a mapping the section


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("data: {lr0: 0.02}\n", r"'data.lr0': 'lr0' belongs to 'optimisation', not 'data'"),
        ("optimisation: {lr00: 0.02}\n", r"'optimisation.lr00' is no optimisation option. Did you mean 'lr0'\?"),
        ("lr0: 0.01\noptimisation: {lr0: 0.02}\n", r"'lr0' is set twice, on its own and under 'optimisation'"),
    ],
)
def test_a_misplaced_grouped_option_is_named(tmp_path, text, match):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(recipe)


def test_train_help_lists_the_options_by_concept():
    import argparse

    from accelyolo.core.config import CONCEPTS

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    titles = [group.title for group in parser._action_groups]
    assert [t for t in titles if t in CONCEPTS] == list(CONCEPTS)
    optimisation = next(g for g in parser._action_groups if g.title == "optimisation")
    assert "--lr0" in [s for action in optimisation._group_actions for s in action.option_strings]

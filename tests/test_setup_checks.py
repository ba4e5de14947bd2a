"""Issue 13 items 3, 5, 6, 11: options checked at set-up, results.csv columns, no empty run folder."""

from __future__ import annotations

import csv

import pytest
import yaml

from accelyolo.commands.fit import fit
from accelyolo.core.config import ConfigError, load_config
from accelyolo.core.config_checks import MIXED_PRECISION
from tests.conftest import tiny_train_options

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resume_in_a_recipe_is_refused_naming_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "yolov8t", "resume": "auto"}))
    with pytest.raises(ConfigError, match=rf"recipe {recipe}: 'resume' cannot be set in a recipe"):
        load_config(recipe)
    recipe.write_text(yaml.safe_dump({"model": "yolov8t"}))
    assert load_config(recipe, resume="auto").resume == "auto"  # the flag stays the way to resume


@pytest.mark.parametrize("value", ["none", "None", ""])
def test_cache_none_means_no_cache(value):
    assert load_config(cache=value).cache is None
    assert load_config(cache="ram").cache == "ram" and load_config(cache="disk").cache == "disk"
    with pytest.raises(ConfigError, match="'cache' must be 'ram', 'disk', 'none' or empty, got 'ssd'"):
        load_config(cache="ssd")


def test_mixed_precision_message_lists_every_accepted_value():
    from accelerate.utils import PrecisionType

    assert set(MIXED_PRECISION) == {p.value for p in PrecisionType}
    with pytest.raises(ConfigError) as info:
        load_config(mixed_precision="fp32")
    for value in MIXED_PRECISION:
        assert value in str(info.value)
    assert "'mixed_precision'" in str(info.value) and "'fp32'" in str(info.value)


def test_cache_none_trains(tiny_demo, tmp_path):
    result = fit(**tiny_train_options(tiny_demo, tmp_path, cache="none", epochs=1, max_steps_per_epoch=1))
    assert result.epochs_completed == 1


def test_close_mosaic_covering_the_run_warns_and_csv_columns_hold_when_epoch_1_is_not_validated(
    tiny_demo, tmp_path, caplog
):
    options = tiny_train_options(tiny_demo, tmp_path, epochs=3, val_interval=2, close_mosaic=3, max_steps_per_epoch=1)
    with caplog.at_level("WARNING", logger="accelyolo"):
        result = fit(**options)
    warnings = [r.getMessage() for r in caplog.records if "close_mosaic" in r.getMessage()]
    assert len(warnings) == 1 and "close_mosaic 3 >= epochs 3" in warnings[0], warnings
    with (result.run_dir / "results.csv").open() as f:
        rows = list(csv.reader(f))
    header = [h.strip() for h in rows[0]]
    assert {"metrics/mAP50", "metrics/mAP50-95", "fitness"} <= set(header)
    assert all(len(row) == len(header) for row in rows[1:]) and len(rows) == 4
    by_epoch = [dict(zip(header, (v.strip() for v in row))) for row in rows[1:]]
    assert by_epoch[0]["metrics/mAP50"] == "" and by_epoch[0]["fitness"] == ""  # epoch 1 not validated
    assert by_epoch[1]["metrics/mAP50"] != "" and by_epoch[2]["fitness"] != ""  # epochs 2 and 3 were


def test_no_close_mosaic_warning_when_mosaic_runs_first(tiny_demo, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="accelyolo"):
        fit(**tiny_train_options(tiny_demo, tmp_path, epochs=2, close_mosaic=1, max_steps_per_epoch=1))
    assert "close_mosaic" not in caplog.text


def _data_with_empty_val(tmp_path, tiny_demo):
    spec = yaml.safe_load(tiny_demo.read_text())
    root = tiny_demo.parent
    (tmp_path / "empty_val").mkdir()
    spec.update(path=str(root), val=str(tmp_path / "empty_val"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("problem", ["empty_val_split", "unknown_model", "damaged_weights"])
def test_a_run_that_fails_before_its_first_epoch_leaves_no_run_folder(tiny_demo, tmp_path, problem):
    from accelyolo.core.errors import AccelyoloError

    project = tmp_path / "project"
    options = tiny_train_options(tiny_demo, project)
    if problem == "empty_val_split":
        options["data"] = str(_data_with_empty_val(tmp_path, tiny_demo))
    elif problem == "unknown_model":
        options["model"] = "yolov8q"
    else:
        bad = tmp_path / "w.safetensors"
        bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
        options["weights"] = str(bad)
    with pytest.raises(AccelyoloError):
        fit(**options)
    assert not (project / "exp").exists()

"""Issue 13 item 2: validation under 2-process DDP on rectangular batches of mixed aspect ratios.

The distributed sampler used to complete a short last batch with an image of another batch (another
shape), so the batch could not be stacked. Each rank now takes whole batches of its own, no padding.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import TINY_ANCHOR_FREE
from tests.real_data_helpers import write_shapes_set
from tests.test_distributed import REPO, launch_args, run

VAL_SCRIPT = """
import json, sys
sys.path.insert(0, REPO)
import accelyolo.weights.checkpoint
from tests.real_data_helpers import NAMES, ColourDetector
detector = ColourDetector(len(NAMES))
accelyolo.weights.checkpoint.load_checkpoint = lambda *a, **k: (detector, {"names": NAMES, "config": {}})
from accelerate import PartialState
from accelyolo.commands.validate import validate
out = validate("colour.safetensors", data=DATA, imgsz=320, batch_size=2, workers=0, save_json=True, plots=False,
               project=PROJECT, name="val", exist_ok=True, verbose=False)
rank = PartialState().process_index
row = {"metrics": out.metrics, "seen": out.result.seen, "instances": out.result.n_instances.tolist()}
open(OUT.format(rank=rank), "w").write(json.dumps(row))
"""

FIT_SCRIPT = """
import json, sys
sys.path.insert(0, REPO)
import accelyolo
from accelerate import PartialState
result = accelyolo.fit(**OPTIONS)
open(OUT.format(rank=PartialState().process_index), "w").write(json.dumps({"ok": True}))
"""


def _write(tmp_path, name, template, **values):
    text = textwrap.dedent(template).replace("REPO", repr(str(REPO)))
    for key, value in values.items():
        text = text.replace(key, repr(value))
    text = text.replace("OUT", repr(str(tmp_path / f"{name}-{{rank}}.json")))
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return str(path)


def _read(tmp_path, name, rank):
    return json.loads((tmp_path / f"{name}-{rank}.json").read_text())


@pytest.mark.slow
def test_ddp_rect_validation_on_an_odd_mixed_aspect_split_matches_one_process(tmp_path):
    data_yaml, truth = write_shapes_set(tmp_path / "data", n=9, seed=5)  # 5 rect batches of 2, the last short
    for n, name in ((2, "two"), (1, "one")):
        script = _write(tmp_path, name, VAL_SCRIPT, DATA=str(data_yaml), PROJECT=str(tmp_path / name))
        run(launch_args(n) + [script])
    one, two0, two1 = _read(tmp_path, "one", 0), _read(tmp_path, "two", 0), _read(tmp_path, "two", 1)
    assert one["seen"] == two0["seen"] == two1["seen"] == 9  # no image counted twice, none missed
    assert one["instances"] == two0["instances"] == two1["instances"]
    assert sum(one["instances"]) == sum(len(b) for b in truth.values())
    assert two0["metrics"] == two1["metrics"] == one["metrics"]
    assert one["metrics"]["mAP50-95"] > 0.2
    predictions = [json.loads((tmp_path / n / "val" / "predictions.json").read_text()) for n in ("one", "two")]
    key = lambda r: (r["image_id"], r["category_id"], r["score"], tuple(r["bbox"]))  # noqa: E731
    assert sorted(predictions[0], key=key) == sorted(predictions[1], key=key)


@pytest.mark.slow
def test_ddp_training_validates_rect_batches_of_mixed_shapes(tmp_path):
    data_yaml, _ = write_shapes_set(tmp_path / "data", n=7, seed=6)
    options = dict(
        data=str(data_yaml),
        model=TINY_ANCHOR_FREE,
        imgsz=64,
        batch_size=1,
        epochs=1,
        workers=0,
        project=str(tmp_path / "runs"),
        name="exp",
        warmup_epochs=0.0,
        plots=False,
        rect_val=True,
        close_mosaic=0,
        max_steps_per_epoch=1,
    )
    run(launch_args(2) + [_write(tmp_path, "fit", FIT_SCRIPT, OPTIONS=options)])
    rows = (tmp_path / "runs" / "exp" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and "mAP50-95" in rows[0]


def test_sharded_batches_partition_the_rect_batches(tmp_path):
    from accelyolo.data import YoloDataset, build_dataloader

    data_yaml, truth = write_shapes_set(tmp_path / "data", n=9, seed=5)
    ds = YoloDataset(sorted(truth), imgsz=64, names=["a", "b", "c"], rect=True, batch_size=2)
    whole = [b["paths"] for b in build_dataloader(ds, batch_size=2, workers=0, shuffle=False)]
    shards = [
        [b["paths"] for b in build_dataloader(ds, batch_size=2, workers=0, shuffle=False, num_shards=2, shard=r)]
        for r in (0, 1)
    ]
    assert [len(s) for s in shards] == [3, 2]
    assert sorted(shards[0] + shards[1]) == sorted(whole)  # the same batches (one shape each), none padded
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]
    with pytest.raises(ValueError, match="shard 2"):
        build_dataloader(ds, batch_size=2, workers=0, shuffle=False, num_shards=2, shard=2)

"""Hyperparameter evolution: mutation within the limits, the CSV/recipe/plot of a real run, resume after a
kill, the same search for the same seed."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from accelyolo.commands.evolve import base_hyp, evolvable_keys, evolve, mutate
from accelyolo.core.config import load_config
from accelyolo.core.hyp import MUTATION_LIMITS
from accelyolo.training.callbacks import Callback
from tests.conftest import TINY_ANCHOR_BASED, TINY_ANCHOR_FREE, tiny_train_options

pytestmark = pytest.mark.usefixtures("one_thread")


def _within_limits(hyp, base):
    for key, value in hyp.items():
        limit = MUTATION_LIMITS[key]
        low, high = (limit.low * base[key], limit.high * base[key]) if limit.relative else (limit.low, limit.high)
        assert low - 1e-12 <= value <= high + 1e-12, (key, value, low, high)


def test_evolvable_keys_follow_the_family():
    free, based = evolvable_keys(TINY_ANCHOR_FREE), evolvable_keys(TINY_ANCHOR_BASED)
    assert "dfl" in free and "cls_pw" in free and not {"obj", "anchor_t", "obj_pw"} & set(free)
    assert "obj" in based and "anchor_t" in based and "dfl" not in based
    assert "fliplr" not in free  # gain 0 in the table: never mutated
    base = base_hyp(load_config(model=TINY_ANCHOR_FREE))
    assert base["box"] == 7.5 and base["lr0"] == 0.01  # an empty loss gain -> the family default


def test_mutation_stays_in_limits_is_seeded_and_changes_something():
    base = base_hyp(load_config(model=TINY_ANCHOR_BASED))
    assert mutate([], base, seed=0, generation=0) == base  # generation 0 trains the recipe's own values
    rows = [{"generation": 0, "fitness": 0.1, **base}]
    rng = np.random.default_rng(5)
    for generation in range(1, 60):
        child = mutate(rows, base, seed=3, generation=generation, parent="single" if generation % 2 else "weighted")
        _within_limits(child, base)
        changed = [k for k in base if child[k] != rows[0][k]]
        assert changed, "a generation must differ from its parent somewhere"
        rows.append({"generation": generation, "fitness": float(rng.random()), **child})
    again = mutate(rows[:10], base, seed=3, generation=10)
    assert again == mutate(rows[:10], base, seed=3, generation=10)
    assert again != mutate(rows[:10], base, seed=4, generation=10)
    # extreme parents are clipped: lr0 far above its limit comes back to 0.1
    wild = [{"generation": 0, "fitness": 1.0, **{**base, "lr0": 50.0, "momentum": 0.01}}]
    for generation in range(1, 20):
        child = mutate(wild, base, seed=1, generation=generation)
        _within_limits(child, base)


class KillGeneration(Callback):
    """Raises in the first epoch of one generation: the stand-in for a killed process."""

    def __init__(self, name):
        self.name = name

    def on_epoch_start(self, trainer, epoch):
        if trainer.run_dir.name == self.name:
            raise KeyboardInterrupt(f"killed {self.name}")


def _read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_three_generations_resume_after_a_kill_and_same_seed(tiny_demo, tmp_path):
    options = tiny_train_options(tiny_demo, tmp_path / "evolve", epochs=1, seed=7)
    options.pop("name")
    with pytest.raises(KeyboardInterrupt):
        evolve(generations=3, callbacks=[KillGeneration("gen2")], **options)
    folder = tmp_path / "evolve" / "exp"
    assert len(_read_csv(folder / "evolve.csv")) == 2
    killed_args = yaml.safe_load((folder / "gen2" / "args.yaml").read_text())  # written before the kill

    result = evolve(generations=3, **options)  # the same command continues, redoing generation 2 once
    assert result.evolve_dir == folder
    rows = _read_csv(folder / "evolve.csv")
    assert [int(r["generation"]) for r in rows] == [0, 1, 2]
    keys = evolvable_keys(TINY_ANCHOR_FREE)
    base = base_hyp(load_config(**options))
    for row in rows:
        _within_limits({k: float(row[k]) for k in keys}, base)
        assert 0.0 <= float(row["fitness"]) <= 1.0
    # generation 2 retrained with exactly the hyperparameters the killed attempt had
    assert all(float(rows[2][k]) == pytest.approx(killed_args[k], rel=1e-5) for k in keys)
    assert {float(rows[0][k]) for k in ("lr0",)} == {0.01}  # generation 0 = the base recipe
    assert any(float(rows[1][k]) != float(rows[0][k]) for k in keys)
    # one final checkpoint per generation, no plots, validation only at the end
    gen1 = folder / "gen1"
    assert sorted(p.name for p in (gen1 / "weights").iterdir()) == [
        "best.safetensors", "inference.safetensors", "last.safetensors"
    ]  # fmt: skip
    assert not list(gen1.glob("*.png"))
    best = yaml.safe_load((folder / "best_hyp.yaml").read_text())
    best_row = max(rows, key=lambda r: float(r["fitness"]))
    assert best["lr0"] == pytest.approx(float(best_row["lr0"]), rel=1e-5)
    assert load_config(folder / "best_hyp.yaml").lr0 == best["lr0"]  # a recipe `accelyolo train` takes
    from PIL import Image

    with Image.open(folder / "evolve.png") as image:
        assert image.size[0] > 0 and image.getcolors(2**16) and len(image.getcolors(2**16)) > 2

    # a rerun with more generations continues; the same seed in a fresh folder gives the same first mutation
    other = tiny_train_options(tiny_demo, tmp_path / "again", epochs=1, seed=7)
    other.pop("name")
    again = evolve(generations=2, **other)
    first = _read_csv(again.evolve_dir / "evolve.csv")
    assert [float(first[1][k]) for k in keys] == [float(rows[1][k]) for k in keys]


def test_cli_evolve_one_generation(tiny_demo, tmp_path, capsys):
    from accelyolo.commands.cli import main

    options = tiny_train_options(tiny_demo, tmp_path, epochs=1)
    flags = ["evolve", "--generations", "1", "--data", str(tiny_demo), "--model", TINY_ANCHOR_FREE, "--imgsz", "64",
             "--batch-size", "8", "--epochs", "1", "--workers", "0", "--project", options["project"],
             "--warmup-epochs", "0", "--close-mosaic", "0", "--no-rect-val"]  # fmt: skip
    assert main(flags) == 0
    assert "1 generations, best generation 0" in capsys.readouterr().out
    assert len(_read_csv(tmp_path / "exp" / "evolve.csv")) == 1
    assert main([*flags[:2], "0", *flags[3:]]) == 2  # a bad value is an error with a message, not a traceback
    assert "'generations' must be at least 1" in capsys.readouterr().err


SCRIPT = """
import json
from accelerate import PartialState
from accelyolo.training.callbacks import Callback
from accelyolo.commands.evolve import end_process_group, evolve

class Record(Callback):
    def __init__(self):
        self.paths = {}
    def on_epoch_start(self, trainer, epoch):
        self.key = trainer.run_dir.name
    def on_step_end(self, trainer, step):
        self.paths.setdefault(self.key, []).append(list(trainer.last_batch["paths"]))

record = Record()
result = evolve(generations=2, callbacks=[record], **OPTIONS)
rank = PartialState().process_index
with open(OUT + f"-{rank}.json", "w") as f:
    json.dump({"paths": record.paths, "rows": result.rows, "dir": str(result.evolve_dir)}, f)
end_process_group()  # as the CLI does: close the group on every rank before exiting
"""


@pytest.mark.slow
def test_two_processes_evolve_together_with_image_weights(tiny_demo, tmp_path):
    """Under 2-process launch both ranks train every generation with the main process's mutation, and
    --image-weights gives each rank its own batches of one shared weighted draw."""
    import json

    from accelyolo.data import YoloDataset, load_data_yaml
    from accelyolo.data.loader import ImageWeightSampler
    from tests.test_distributed import launch_args, run

    options = tiny_train_options(tiny_demo, tmp_path / "evolve", epochs=1, image_weights=True, seed=5)
    options.pop("name")
    script = tmp_path / "evolve_script.py"
    out = str(tmp_path / "rank")
    script.write_text(SCRIPT.replace("OPTIONS", repr(options)).replace("OUT", repr(out)))
    run(launch_args(2) + [str(script)])
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["rows"] == ranks[1]["rows"] and len(ranks[0]["rows"]) == 2
    assert ranks[0]["dir"] == ranks[1]["dir"]
    assert len(_read_csv(tmp_path / "evolve" / "exp" / "evolve.csv")) == 2
    # the epoch's draw (class mAPs 0 before the first validation), batches of 8 dealt out alternately
    spec = load_data_yaml(tiny_demo)
    dataset = YoloDataset(spec.splits["train"], imgsz=64, names=spec.names)
    draw = [dataset.im_files[i] for i in ImageWeightSampler(dataset, seed=5).indices()]
    batches = [draw[k : k + 8] for k in range(0, len(draw), 8)]
    for gen in ("gen0", "gen1"):
        assert ranks[0]["paths"][gen] == batches[0::2]
        assert ranks[1]["paths"][gen] == batches[1::2]

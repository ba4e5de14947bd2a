"""Hyperparameter evolution: `accelyolo evolve`, `accelerate launch accelyolo/evolve.py`, `accelyolo.evolve()`.

YOLOv5's genetic search. Generation 0 trains the recipe's own hyperparameters; every later generation
picks a parent among the 5 fittest generations so far (drawn with probability growing with fitness,
`parent="single"`, or their fitness-weighted mean, `parent="weighted"`), multiplies each evolvable
hyperparameter with probability 0.8 by `1 + N(0,1) * U(0,1) * 0.2 * gain` (the factor clipped to
[0.3, 3.0]) and clips the result to its limits. Gains and limits are one table,
`accelyolo.core.hyp.MUTATION_LIMITS`.

Each generation is one full `fit()` in `<evolve folder>/gen{K}/`, validated only at its last epoch,
without plots and with only its final checkpoint. The evolve folder (`runs/evolve/exp`, `exp2`, ...)
holds `evolve.yaml` (the base options: a rerun of the same command continues the same folder),
`evolve.csv` (one row per finished generation: metrics, fitness, every evolved hyperparameter),
`best_hyp.yaml` (a recipe for `accelyolo train --recipe`) and `evolve.png` (fitness against each
hyperparameter). A generation killed half-way has no row, so a rerun trains it again from scratch;
no generation is counted twice. A generation's hyperparameters depend only on `seed`, the
generation number and the rows before it, so the same command gives the same search.

Under `accelerate launch` every generation trains on all processes; the main process chooses the
folder and the mutation and broadcasts them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import math
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from accelyolo.core.config import ConfigError, TrainConfig, load_config
from accelyolo.core.fileio import write_text_atomically
from accelyolo.core.flags import add_config_arguments, config_from_args
from accelyolo.core.hyp import MUTATION_LIMITS

LOGGER = logging.getLogger("accelyolo")

EVOLVE_PROJECT = "runs/evolve"
METRIC_KEYS = ("precision", "recall", "mAP50", "mAP50-95", "fitness")
TOP_PARENTS = 5  # parents are chosen among the fittest N generations
MUTATION_PROBABILITY = 0.8
MUTATION_SIGMA = 0.2
FACTOR_RANGE = (0.3, 3.0)
# Options fixed per generation (the folder, no plots, validation and checkpoint at the end only).
_PER_GENERATION = ("project", "name", "exist_ok", "resume", "plots", "val_interval", "save_period", "nosave")


@dataclass
class EvolveResult:
    """What an evolution produced: its folder, one row per generation, and the fittest row."""

    evolve_dir: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any]


def evolvable_keys(model: str) -> list[str]:
    """Hyperparameters evolved for `model`: a mutation gain > 0 and read by the model's family."""
    from accelyolo.families.registry import get_family, list_families, model_spec

    family = model_spec(model).family
    foreign = {key for name in list_families() if name != family for key in get_family(name).own_options}
    foreign -= set(get_family(family).own_options)
    return [key for key, limit in MUTATION_LIMITS.items() if limit.gain > 0 and key not in foreign]


def base_hyp(cfg: TrainConfig) -> dict[str, float]:
    """The configuration's evolvable hyperparameters as numbers (an empty loss gain -> the family default)."""
    from accelyolo.families.registry import get_family, model_spec

    family = get_family(model_spec(cfg.model).family)
    hyp = cfg.hyp()
    out = {}
    for key in evolvable_keys(cfg.model):
        out[key] = family.option(hyp, key)
    return out


def clip_to_limits(key: str, value: float, base: float) -> float:
    """`value` inside the limits of `key` (relative limits are multiples of `base`), 5 significant digits."""
    limit = MUTATION_LIMITS[key]
    low, high = (limit.low * base, limit.high * base) if limit.relative else (limit.low, limit.high)
    value = float(min(max(value, low), high))
    return float(f"{value:.5g}")


def mutate(
    rows: Sequence[Mapping[str, Any]],
    base: Mapping[str, float],
    seed: int,
    generation: int,
    parent: str = "single",
) -> dict[str, float]:
    """The hyperparameters of `generation`: `base` for the first, else a mutated parent from `rows`.

    Args:
        rows: finished generations, each with `fitness` and a value for every key of `base`.
        base: the starting hyperparameters (the keys evolved; the reference of relative limits).
        seed: the evolution's seed; with `generation` it seeds every draw.
        parent: "single" (one of the top 5, drawn with weights fitness - min + 1e-6) or "weighted"
            (the weighted mean of the top 5).
    """
    if not rows:
        return dict(base)
    rng = np.random.default_rng([int(seed) % 2**63, int(generation)])
    keys = list(base)
    top = sorted(rows, key=lambda r: float(r["fitness"]), reverse=True)[:TOP_PARENTS]
    fitness = np.array([float(r["fitness"]) for r in top])
    weights = fitness - fitness.min() + 1e-6
    values = np.array([[float(r[k]) for k in keys] for r in top])  # (n, keys)
    if parent == "single":
        start = values[int(rng.choice(len(top), p=weights / weights.sum()))]
    elif parent == "weighted":
        start = (values * weights[:, None]).sum(0) / weights.sum()
    else:
        raise ConfigError(f"evolve: 'parent' must be 'single' or 'weighted', got {parent!r}.")
    gains = np.array([MUTATION_LIMITS[k].gain for k in keys])
    factor = np.ones(len(keys))
    while np.all(factor == 1) and np.any(gains > 0):  # mutate until something changes
        mask = rng.random(len(keys)) < MUTATION_PROBABILITY
        factor = (gains * mask * rng.standard_normal(len(keys)) * rng.random() * MUTATION_SIGMA + 1).clip(*FACTOR_RANGE)
    return {k: clip_to_limits(k, v * f, float(base[k])) for k, v, f in zip(keys, start, factor)}


# ---------------------------------------------------------------------------------------- files


def read_rows(path: Path, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The finished generations of `evolve.csv` (empty when it does not exist)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [k for k in ("generation", *METRIC_KEYS, *keys) if k not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: columns {', '.join(missing)} are missing; evolve into a new folder.")
        for line, raw in enumerate(reader, start=2):
            try:
                row: dict[str, Any] = {"generation": int(raw["generation"])}
                row.update({k: float(raw[k]) for k in (*METRIC_KEYS, *keys)})
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{path}, line {line}: not a number ({exc}).") from exc
            rows.append(row)
    return rows


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["generation", *METRIC_KEYS, *keys])
    for row in rows:
        writer.writerow([row["generation"], *(f"{float(row[k]):.6g}" for k in (*METRIC_KEYS, *keys))])
    write_text_atomically(path, out.getvalue())


def write_best_recipe(path: Path, base: Mapping[str, Any], best: Mapping[str, Any], keys: Sequence[str]) -> None:
    """A recipe with the base options and the fittest generation's hyperparameters."""
    recipe = {k: v for k, v in base.items() if k not in ("project", "name", "exist_ok", "resume")}
    recipe.update({k: float(best[k]) for k in keys})
    head = (
        f"# accelyolo evolve: best of {path.parent} (generation {best['generation']}, "
        + ", ".join(f"{k} {float(best[k]):.4f}" for k in METRIC_KEYS)
        + ")\n# train with: accelyolo train --recipe "
        + str(path)
        + "\n"
    )
    write_text_atomically(path, head + yaml.safe_dump(recipe, sort_keys=False))


def plot_evolution(path: Path, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    """`evolve.png`: one small panel per hyperparameter, fitness (y) against its value (x); the fittest
    generation drawn larger in red."""
    from PIL import Image, ImageDraw

    cols = min(6, len(keys)) or 1
    panel, pad = 160, 24
    n_rows = math.ceil(len(keys) / cols)
    image = Image.new("RGB", (cols * panel, n_rows * panel), "white")
    draw = ImageDraw.Draw(image)
    fitness = np.array([float(r["fitness"]) for r in rows])
    f_lo, f_hi = float(fitness.min()), float(fitness.max())
    best = int(fitness.argmax())
    for i, key in enumerate(keys):
        x0, y0 = (i % cols) * panel, (i // cols) * panel
        values = np.array([float(r[key]) for r in rows])
        v_lo, v_hi = float(values.min()), float(values.max())
        draw.rectangle([x0 + pad, y0 + pad, x0 + panel - 8, y0 + panel - pad], outline=(180, 180, 180))
        draw.text((x0 + pad, y0 + 6), f"{key} = {values[best]:.4g}", fill="black")
        for j, (v, f) in enumerate(zip(values, fitness)):
            px = x0 + pad + 4 + (v - v_lo) / (v_hi - v_lo or 1) * (panel - pad - 20)
            py = y0 + panel - pad - 4 - (f - f_lo) / (f_hi - f_lo or 1) * (panel - 2 * pad - 8)
            r, colour = (4, (220, 30, 30)) if j == best else (2, (40, 90, 200))
            draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)
    image.save(path)


# ---------------------------------------------------------------------------------------- the loop


def _signature(cfg_dict: Mapping[str, Any], parent: str) -> dict[str, Any]:
    """What makes two evolve commands the same search (the generation count may grow)."""
    options = {k: v for k, v in cfg_dict.items() if k not in _PER_GENERATION}
    return {"parent": parent, "options": options}


def find_evolve_dir(project: Path, name: str, signature: Mapping[str, Any]) -> Path:
    """The newest `project/name*` folder evolved with the same options, else a new incremented one."""
    from accelyolo.core.runs import increment_path

    if project.is_dir():
        pattern = re.compile(re.escape(re.sub(r"\d+$", "", name) or name) + r"\d*$")
        folders = [p for p in project.iterdir() if p.is_dir() and pattern.fullmatch(p.name)]
        for folder in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True):
            saved = folder / "evolve.yaml"
            if saved.is_file() and yaml.safe_load(saved.read_text()) == dict(signature):
                return folder
    return increment_path(project / name)


def evolve(
    recipe: str | None = None,
    *,
    generations: int = 10,
    parent: str = "single",
    callbacks: list | None = None,
    **overrides: Any,
) -> EvolveResult:
    """Evolve the hyperparameters of a recipe over `generations` trainings (counting generation 0).

    `overrides` are `TrainConfig` options, as for `fit()`; `project` defaults to `runs/evolve`.
    `callbacks` are passed to every generation's `fit()`. Rerunning the same call continues its folder.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from accelyolo.commands.fit import fit
    from accelyolo.core.failure import close_process_group_at_exit

    if generations < 1:
        raise ConfigError(f"evolve: 'generations' must be at least 1, got {generations}.")
    if parent not in ("single", "weighted"):
        raise ConfigError(f"evolve: 'parent' must be 'single' or 'weighted', got {parent!r}.")
    if overrides.get("resume"):
        raise ConfigError("evolve: 'resume' does not apply; rerun the same evolve command to continue it.")
    overrides.setdefault("project", EVOLVE_PROJECT)
    cfg = load_config(recipe, **overrides)
    if cfg.optimizer.lower() == "auto":  # auto replaces lr0 and momentum: evolving them would change nothing
        LOGGER.info("evolve: optimizer auto -> SGD, so that the evolved lr0 and momentum are the ones trained")
        cfg = dataclasses.replace(cfg, optimizer="SGD")
    cfg_dict = cfg.to_dict()
    keys = evolvable_keys(cfg.model)
    base = base_hyp(cfg)
    # the process group Accelerate would start (ACCELERATE_USE_CPU: the CPU processes of `accelerate launch`)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    close_process_group_at_exit()
    folder = _main_process_choice(state, lambda: _open_evolve_dir(cfg, _signature(cfg_dict, parent)))
    table = folder / "evolve.csv"
    LOGGER.info("evolve: %d generations of %d epochs in %s", generations, cfg.epochs, folder)
    while True:
        plan = _main_process_choice(state, lambda: _next_generation(folder, keys, base, cfg.seed, generations, parent))
        if plan is None:
            break
        generation, hyp = plan
        LOGGER.info("evolve: generation %d/%d", generation + 1, generations)
        options = {k: v for k, v in cfg_dict.items() if k != "resume"}
        options.update(hyp)
        options.update(
            project=str(folder), name=f"gen{generation}", exist_ok=True, plots=False,
            val_interval=cfg.epochs, save_period=-1, nosave=True,
        )  # fmt: skip
        result = fit(None, callbacks=callbacks, **options)
        if state.is_main_process:
            _record_generation(folder, keys, cfg_dict, generation, hyp, result.metrics)
        state.wait_for_everyone()
    rows = read_rows(table, keys)
    best = max(rows, key=lambda r: r["fitness"])
    return EvolveResult(evolve_dir=folder, rows=rows, best=best)


def _main_process_choice(state: Any, choose: Callable[[], Any]) -> Any:
    """`choose()` run on the main process only, its result broadcast to every process."""
    from accelerate.utils import broadcast_object_list

    chosen = [choose() if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(chosen, from_process=0)
    return chosen[0]


def _open_evolve_dir(cfg: TrainConfig, signature: Mapping[str, Any]) -> Path:
    """The evolve folder (`find_evolve_dir`), created, with the options it evolves under saved in it."""
    folder = find_evolve_dir(Path(cfg.project), cfg.name, signature)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(folder / "evolve.yaml", yaml.safe_dump(dict(signature), sort_keys=False))
    return folder


def _next_generation(
    folder: Path, keys: list[str], base: Mapping[str, float], seed: int, generations: int, parent: str
) -> tuple[int, dict[str, float]] | None:
    """(generation, its mutated hyperparameters) of the next generation to train, or None when all are done."""
    rows = read_rows(folder / "evolve.csv", keys)
    generation = len(rows)
    if generation >= generations:
        return None
    hyp = mutate(rows, base, seed, generation, parent)
    shutil.rmtree(folder / f"gen{generation}", ignore_errors=True)  # a killed attempt
    return generation, hyp


def _record_generation(
    folder: Path,
    keys: list[str],
    cfg_dict: Mapping[str, Any],
    generation: int,
    hyp: Mapping[str, float],
    metrics: Mapping[str, float] | None,
) -> None:
    """A trained generation's row appended to evolve.csv; best_hyp.yaml and evolve.png brought up to date."""
    table = folder / "evolve.csv"
    rows = read_rows(table, keys)
    metrics = metrics or dict.fromkeys(METRIC_KEYS, 0.0)
    rows.append({"generation": generation, **{k: metrics[k] for k in METRIC_KEYS}, **hyp})
    write_rows(table, rows, keys)
    best = max(rows, key=lambda r: r["fitness"])
    write_best_recipe(folder / "best_hyp.yaml", cfg_dict, best, keys)
    plot_evolution(folder / "evolve.png", rows, keys)
    LOGGER.info(
        "evolve: generation %d fitness %.5f (best %.5f, generation %d)",
        generation, rows[-1]["fitness"], best["fitness"], best["generation"],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generations", type=int, default=10, help="generations to train, counting the first")
    parser.add_argument(
        "--parent",
        choices=("single", "weighted"),
        default="single",
        help="one of the 5 fittest (single) or their fitness-weighted mean (weighted)",
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    options = dict(vars(args))
    generations, parent = options.pop("generations"), options.pop("parent")
    recipe, overrides = config_from_args(argparse.Namespace(**options))
    try:
        result = evolve(recipe, generations=generations, parent=parent, **overrides)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"accelyolo evolve: {exc}", file=sys.stderr)
        return 2
    best = result.best
    print(
        f"evolution in {result.evolve_dir}: {len(result.rows)} generations, best generation {best['generation']} "
        f"fitness {best['fitness']:.5f} (generation 0: {result.rows[0]['fitness']:.5f}); "
        f"recipe {result.evolve_dir / 'best_hyp.yaml'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from accelyolo.core.logs import setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(
        prog="accelyolo evolve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    status = run(parser.parse_args(argv))
    end_process_group()
    return status


def end_process_group() -> None:
    """Leave a distributed run in step: every rank waits for the others, then the process group is closed
    before the interpreter exits (a rank that exits while another still holds an open gloo group can abort
    that one at shutdown: "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

"""`accelyolo train`: also `accelerate launch accelyolo/train.py [--recipe FILE] [--flag value ...]`.

Also `python -m accelyolo.train` and `accelyolo train`. With no arguments it trains the default nano
model on the built-in demo data (the `demo` recipe).
"""

from __future__ import annotations

import argparse
import sys

from accelyolo.commands.cli import exit_status
from accelyolo.core.errors import AccelyoloError
from accelyolo.core.flags import add_config_arguments, config_from_args
from accelyolo.core.logs import setup_logging

DEFAULT_RECIPE = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from accelyolo.commands.fit import fit

    recipe, overrides = config_from_args(args)
    if recipe is None and not overrides.get("data") and not overrides.get("resume"):
        recipe = DEFAULT_RECIPE
    try:
        result = fit(recipe, **overrides)
    except AccelyoloError as error:  # a user's mistake: one message naming the file or key, exit status 2
        return exit_status("accelyolo train", error)
    print(
        f"results in {result.run_dir}: best epoch {result.best_epoch}, "
        + " ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    setup_logging()  # the main process is not known before Accelerate starts: fit() narrows it per rank
    parser = argparse.ArgumentParser(
        prog="accelyolo train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

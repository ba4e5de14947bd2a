"""`accelyolo import SRC -o OUT.safetensors`: convert another tool's weights into an accelyolo bundle."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

LOGGER = logging.getLogger("accelyolo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a YOLOv5 / YOLOv8 / YOLO11 .pt checkpoint, or a .safetensors state dict")
    parser.add_argument(
        "-o", "--output", default=None, help="the bundle to write (default: SOURCE with the suffix .safetensors)"
    )


def run(args: argparse.Namespace) -> int:
    from accelyolo.core.errors import AccelyoloError
    from accelyolo.weights.importers import save_imported

    source = Path(args.source)
    output = Path(args.output) if args.output else source.with_suffix(".safetensors")
    # errors: one line on stderr and exit status 2, as accelyolo.commands.cli.exit_status words them
    if output.resolve() == source.resolve():
        print(
            f"accelyolo import: the output {output} would overwrite the source; pass -o OUT.safetensors",
            file=sys.stderr,
        )
        return 2
    try:
        path, imported = save_imported(source, output)
    except AccelyoloError as error:
        print(f"accelyolo import: {error}", file=sys.stderr)
        return 2
    config = imported.model.config
    n = sum(p.numel() for p in imported.model.parameters())
    print(
        f"imported {source} ({imported.source}, entry {imported.entry or '-'}) as {config['name']} "
        f"nc={config['nc']} ({n:,} parameters) -> {path}"
    )
    return 0

"""The `accelyolo` console script: `train`, `val`, `predict`, `evolve`, `export`, `import`, `push`, `data check`
and `data convert`."""

from __future__ import annotations

import argparse
import importlib
import sys

from accelyolo.core.errors import exit_status  # also imported from here by the entry points

# subcommand -> (module with add_arguments(parser) and run(args), help)
COMMANDS = {
    "train": ("accelyolo.commands.train", "train a model (same flags as accelyolo/train.py)"),
    "val": ("accelyolo.commands.validate", "validate a checkpoint on a dataset"),
    "predict": ("accelyolo.commands.predict", "detect objects in images"),
    "evolve": (
        "accelyolo.commands.evolve",
        "evolve hyperparameters: one training per generation (YOLOv5's genetic search)",
    ),
    "export": ("accelyolo.commands.export", "export a checkpoint to ONNX (pip install 'accelyolo[export]')"),
    "import": ("accelyolo.weights.command", "convert YOLOv5/YOLOv8/YOLO11 .pt weights into a .safetensors bundle"),
    "push": ("accelyolo.weights.push", "share weights as a Hugging Face Hub model repository (or a local folder)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accelyolo", description="YOLO training on HuggingFace Accelerate")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="dataset health report per split")
    from accelyolo.data import check as data_check

    data_check.add_arguments(check)
    check.set_defaults(func=data_check.run)
    convert = data_sub.add_parser("convert", help="write a dataset as YOLO txt or COCO JSON")
    from accelyolo.data import convert as data_convert

    data_convert.add_arguments(convert)
    convert.set_defaults(func=data_convert.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from accelyolo.core.logs import setup_logging

    setup_logging()
    args = build_parser().parse_args(argv)
    func = args.func
    for key in ("func", "command", "data_command"):
        if hasattr(args, key):
            delattr(args, key)
    from accelyolo.core.errors import AccelyoloError

    try:
        return int(func(args) or 0)
    except AccelyoloError as error:  # every subcommand's user errors end the same way: message, status 2
        return exit_status(f"accelyolo {command_name(argv)}", error)


def command_name(argv: list[str] | None) -> str:
    """`train`, `val`, `predict` or `data check`: the subcommand named in `argv`."""
    words = [w for w in (sys.argv[1:] if argv is None else argv)[:2] if not w.startswith("-")]
    return " ".join(words[:2] if words[:1] == ["data"] else words[:1])


if __name__ == "__main__":
    sys.exit(main())

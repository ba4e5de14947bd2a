"""The `accelyolo` console script: `train`, `val`, `predict`, `export`, `import` and `data check`."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments(parser) and run(args), help)
COMMANDS = {
    "train": ("accelyolo.train", "train a model (same flags as accelyolo/train.py)"),
    "val": ("accelyolo.validate", "validate a checkpoint on a dataset"),
    "predict": ("accelyolo.predict", "detect objects in images"),
    "export": ("accelyolo.exporter", "export a checkpoint to ONNX (pip install 'accelyolo[export]')"),
    "import": ("accelyolo.weights.command", "convert YOLOv5/YOLOv8/YOLO11 .pt weights into a .safetensors bundle"),
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
    return parser


def main(argv: list[str] | None = None) -> int:
    from accelyolo.logs import setup_logging

    setup_logging()
    args = build_parser().parse_args(argv)
    func = args.func
    for key in ("func", "command", "data_command"):
        if hasattr(args, key):
            delattr(args, key)
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

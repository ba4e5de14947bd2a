"""`accelyolo data check DATA_YAML [--json]`: the dataset health report, per split.

Per split: usable images, backgrounds, boxes, boxes per class, corrupt files and every problem
with its file. Exit status 1 only when a split has no usable image (or the yaml is unusable).
Uses (and refreshes) the same label cache as training. A data.yaml with segmentation keys
(`seg_train`, `seg_val`, see `accelyolo.data.segmentation`) also gets its masks checked: usable
images and every bad mask with its file, per segmentation split.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from accelyolo.core.errors import DataError, exit_status
from accelyolo.data.dataset import SINGLE_CLASS_NAMES, build_report
from accelyolo.data.segmentation import check_masks, load_seg_spec
from accelyolo.data.sources import checked_entries
from accelyolo.data.spec import DataConfigError, DataSpec, load_data_yaml

LOGGER = logging.getLogger(__name__)  # a child of "accelyolo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `data check` options to `parser`."""
    parser.add_argument("data", metavar="DATA_YAML", help="the dataset's data.yaml")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--single-cls", action="store_true", help="count every box as the one class 'item' (as training does)"
    )
    parser.add_argument(
        "--max-problems", type=int, default=30, help="problems listed per split in the tables (JSON: all)"
    )


def check_dataset(spec: DataSpec, single_cls: bool = False) -> dict[str, Any]:
    """The health report of every split of `spec` (JSON-ready); `single_cls` counts every box as `item`.

    Returns:
        `{"data": yaml path, "names": [...], "splits": {split: build_report(...)}}`.
    """
    splits = {}
    for split, images in spec.splits.items():
        if not images:
            report = build_report([], spec.names)
            problem = f"split '{split}' has no images"
            report["problems"].append({"file": str(spec.yaml_path), "line": None, "problem": problem})
        else:
            entries, cache_file, hit = checked_entries(images, spec.nc, fallback_dir=spec.yaml_path.parent)
            report = build_report(entries, spec.names, cache_file, hit, single_cls=single_cls)
        splits[split] = report
    names = list(SINGLE_CLASS_NAMES) if single_cls else spec.names
    out = {"data": str(spec.yaml_path), "names": names, "splits": splits}
    seg = load_seg_spec(spec.yaml_path)
    if seg is not None:
        out["segmentation"] = {}
        for split, images in seg.splits.items():
            good, problems = check_masks(images, seg.num_classes, seg.ignore)
            out["segmentation"][split] = {"images": len(good), "problems": problems}
    return out


def run(args: argparse.Namespace) -> int:
    """Run the check for parsed arguments; returns the exit status.

    The report (JSON or tables) is the command's output and goes to stdout; an unusable yaml is one
    error line on stderr (with `--json`, it is reported in the JSON object instead), exit status 2.
    """
    try:
        spec = load_data_yaml(args.data)
    except (DataConfigError, DataError) as err:  # exit status 2, one message naming the file and key
        if args.json:
            print(json.dumps({"data": str(args.data), "error": str(err), "splits": {}}))
            return 2
        return exit_status("accelyolo data check", err)
    result = check_dataset(spec, single_cls=args.single_cls)
    if args.json:
        print(json.dumps(result))
    else:
        _print_tables(result, args.max_problems)
    reports = [*result["splits"].values(), *result.get("segmentation", {}).values()]
    return 1 if any(r["images"] == 0 for r in reports) else 0


def _print_tables(result: dict[str, Any], max_problems: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title=f"dataset check: {result['data']}")
    cols = ("images", "backgrounds", "boxes", "corrupt", "missing_labels", "empty_labels")
    cols += ("duplicates_removed", "rows_dropped", "rows_clipped")
    summary.add_column("split")
    for c in cols:
        summary.add_column(c.replace("_", " "), justify="right")
    for split, r in result["splits"].items():
        style = "red" if r["images"] == 0 else None
        summary.add_row(split, *(str(r[c]) for c in cols), style=style)
    console.print(summary)
    classes = Table(title="boxes per class")
    classes.add_column("class")
    for split in result["splits"]:
        classes.add_column(split, justify="right")
    for name in result["names"]:
        counts = [str(r["boxes_per_class"].get(name, 0)) for r in result["splits"].values()]
        classes.add_row(name, *counts)
    console.print(classes)
    for split, r in result["splits"].items():
        if not r["problems"]:
            continue
        table = Table(title=f"{split}: {len(r['problems'])} problems")
        table.add_column("file", overflow="fold")
        table.add_column("problem", overflow="fold")
        for p in r["problems"][:max_problems]:
            table.add_row(p["file"] if p.get("line") is None else f"{p['file']}:{p['line']}", p["problem"])
        console.print(table)
        if len(r["problems"]) > max_problems:
            console.print(f"... {len(r['problems']) - max_problems} more (use --json for all)")
    for split, r in result.get("segmentation", {}).items():
        console.print(f"{split}: {r['images']} images with usable masks, {len(r['problems'])} problems")
        for p in r["problems"][:max_problems]:
            console.print(f"  {p['file']}: {p['problem']}")


def main(argv: list[str] | None = None) -> int:
    """`python -m accelyolo.data.check DATA_YAML [--json]`."""
    parser = argparse.ArgumentParser(prog="accelyolo data check", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

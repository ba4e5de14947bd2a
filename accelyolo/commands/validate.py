"""`accelyolo val --weights FILE --data DATA_YAML` and `accelyolo.validate(...)`.

Runs under `accelerate launch` too: each rank evaluates its shard and the records are gathered (see
`accelyolo.evaluation.evaluators`). The last line printed is `mAP50=<number> mAP50-95=<number>`, followed by
` pixel_accuracy=<number> mIoU=<number>` for a multi-task model (its per-class IoU table is logged),
measured on the data.yaml's `seg_val` split.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelyolo.core.defaults import MAX_DET, VAL_CONF_THRES, VAL_IOU_THRES
from accelyolo.core.flags import add_option_flag, takes_option_names

LOGGER = logging.getLogger("accelyolo")


@dataclass
class ValResult:
    """What `validate()` returns."""

    metrics: dict[str, float]
    result: Any  # accelyolo.evaluation.metrics.DetectionResult
    save_dir: Path | None
    predictions_json: Path | None


@takes_option_names
def validate(
    weights: str,
    data: str | None = None,
    imgsz: int | None = None,
    batch_size: int = 32,
    conf_thres: float = VAL_CONF_THRES,
    iou_thres: float = VAL_IOU_THRES,
    max_det: int = MAX_DET,
    workers: int = 2,
    save_json: bool = False,
    plots: bool = True,
    project: str = "runs/val",
    name: str = "exp",
    exist_ok: bool = False,
    rect_val: bool = True,
    verbose: bool = True,
) -> ValResult:
    """Validate a `.safetensors` checkpoint on a dataset's `val` split (EMA weights when present).

    `data` and `imgsz` default to the ones the checkpoint was trained with (the demo data if none); the
    keywords are the training options' names (`conf_thres`, `rect_val`, ...).
    """
    import torch

    from accelyolo.core.config import check_detection_flags
    from accelyolo.core.runs import make_run_dir
    from accelyolo.data import validation_loader
    from accelyolo.evaluation.evaluators import evaluate
    from accelyolo.weights.importers import load_weights

    check_detection_flags(imgsz, conf_thres, iou_thres, max_det, batch_size, workers)
    accelerator = _accelerator()
    model, meta = load_weights(weights)  # a bundle (EMA preferred), or a YOLOv5/v8/11 .pt imported
    imgsz = imgsz or int(meta.get("config", {}).get("imgsz", 640))
    with accelerator.main_process_first():
        val = _val_data(weights, model, meta, data, imgsz, rect_val, batch_size)
    loader = validation_loader(val.dataset, batch_size, workers, accelerator.num_processes, accelerator.process_index)
    model = model.fuse().to(accelerator.device, memory_format=torch.channels_last).eval()
    save_dir = make_run_dir(accelerator, Path(project) / name, exist_ok)
    outputs = _BatchOutputs(val, save_dir, save_json, plots and accelerator.is_main_process)
    thresholds = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det}
    result = evaluate(
        model, loader, accelerator, nc=model.nc, names=val.names, on_batch=outputs, channels_last=True, **thresholds
    )
    json_path = outputs.write_json(accelerator) if save_json else None
    metrics = result.as_dict()
    if val.seg_data is not None:
        metrics.update(_segmentation_metrics(model, val.seg_data, batch_size, workers, accelerator))
    if accelerator.is_main_process:
        _report(result, val.names, save_dir, verbose, plots)
    accelerator.wait_for_everyone()
    return ValResult(metrics=metrics, result=result, save_dir=save_dir, predictions_json=json_path)


def _accelerator() -> Any:
    """The command's `Accelerator`, with a clean exit under `accelerate launch` (`accelyolo.core.failure`), logging
    on the main process and the cores it may use."""
    from accelerate import Accelerator

    from accelyolo.core.failure import close_process_group_at_exit
    from accelyolo.core.logs import setup_logging
    from accelyolo.core.threads import use_available_cores

    accelerator = Accelerator()
    close_process_group_at_exit()
    setup_logging(main_process=accelerator.is_main_process)
    LOGGER.info("%s", use_available_cores(accelerator.device))
    return accelerator


@dataclass
class _ValData:
    """What a validation reads: the data spec, the class names scored, the val dataset, a multi-task model's
    segmentation dataset, and the ids its predictions.json takes (a COCO file's own, else stems and indices)."""

    spec: Any
    names: list[str]
    dataset: Any
    seg_data: Any
    image_ids: dict[str, Any]
    category_ids: Any


def _val_data(
    weights: str, model: Any, meta: dict[str, Any], data: str | None, imgsz: int, rect: bool, batch_size: int
) -> _ValData:
    """The val split of `data` (default: the model's training data, else the demo data) as the model scores
    it; a `DataError` when the classes or the split do not fit the model. Nothing is written."""
    from accelyolo.core.errors import DataError
    from accelyolo.data import demo_data_yaml, load_data_yaml, validation_split
    from accelyolo.data.demo import demo_multitask_yaml
    from accelyolo.data.sources import source_of

    trained = meta.get("config", {})
    segments = hasattr(model, "seg_head")
    spec = load_data_yaml(data or trained.get("data") or (demo_multitask_yaml() if segments else demo_data_yaml()))
    single_cls = bool(trained.get("single_cls", False))
    names = ["item"] if single_cls else list(meta.get("names") or spec.names)
    data_classes = 1 if single_cls else len(spec.names)  # single_cls trains one class
    if not model.nc == len(names) == data_classes:
        raise DataError(
            f"{weights}: the model has {model.nc} classes, the dataset {spec.yaml_path} "
            f"{data_classes}; pass the data.yaml the model was trained on."
        )
    if not spec.splits.get("val"):
        raise DataError(f"{spec.yaml_path}: the 'val' split has no images; point 'val:' at a folder or list of images.")
    if spec.category_ids and not single_cls and meta.get("names") and list(meta["names"]) != spec.names:
        raise DataError(  # an annotation file names its classes: the model's must be the same, in order
            f"{weights}: the model's classes {list(meta['names'])} differ from the categories of "
            f"{spec.yaml_path} {spec.names} (sorted by id); pass the annotation file the model was trained on."
        )
    # single_cls: the dataset's classes for the check, then every box is 'item'
    classes = list(spec.names) if single_cls else names
    dataset = validation_split(spec.splits["val"], imgsz, classes, rect, batch_size, single_cls=single_cls)
    # a multi-task model's segmentation split, checked before the run folder exists
    seg_data = _segmentation_data(model, weights, spec.yaml_path, meta, imgsz) if segments else None
    source = source_of(spec.splits["val"])
    return _ValData(
        spec=spec,
        names=names,
        dataset=dataset,
        seg_data=seg_data,
        image_ids=source.image_ids() if source is not None else {},
        category_ids=spec.category_ids if not single_cls else None,
    )


class _BatchOutputs:
    """Called with each validated batch: its COCO records (`save_json`) and the first three batches' label and
    prediction pictures (`plots`). An image that DDP's even batching repeats keeps its first records, the rule
    the evaluator applies to its per-image records."""

    def __init__(self, val: _ValData, save_dir: Path, save_json: bool, plots: bool) -> None:
        from accelyolo.core.boxes import scale_boxes  # imported here, not per batch (the module stays torch-free)
        from accelyolo.evaluation.metrics import coco_json_records

        self.val, self.save_dir, self.save_json, self.plots = val, save_dir, save_json, plots
        self.scale_boxes, self.coco_json_records = scale_boxes, coco_json_records
        self.json_by_image: dict[str, list[dict[str, Any]]] = {}
        self.plotted = 0

    def __call__(self, batch: dict[str, Any], detections: list[Any]) -> None:
        scale_boxes, coco_json_records = self.scale_boxes, self.coco_json_records
        if self.save_json:
            for det, path, orig, ratio_pad in zip(
                detections, batch["paths"], batch["orig_shapes"], batch["ratio_pads"]
            ):
                det = det.detach().float().cpu().clone()
                det[:, :4] = scale_boxes(det[:, :4], ratio_pad=ratio_pad, orig_shape=tuple(orig))
                records = coco_json_records(
                    str(path), det.numpy(), self.val.image_ids.get(str(path)), self.val.category_ids
                )
                self.json_by_image.setdefault(str(path), records)
        if self.plots and self.plotted < 3:
            from accelyolo.evaluation.plots import plot_batch

            images, paths, names, n = batch["images"].cpu(), batch["paths"], self.val.names, self.plotted
            plot_batch(images, batch["targets"].cpu(), paths, names, self.save_dir / f"val_batch{n}_labels.png")
            preds = [d.detach().cpu() for d in detections]
            plot_batch(images, None, paths, names, self.save_dir / f"val_batch{n}_pred.png", preds=preds)
            self.plotted += 1

    def write_json(self, accelerator: Any) -> Path | None:
        """predictions.json of every rank's records (written by the main process, which returns its path)."""
        from accelerate.utils import gather_object

        from accelyolo.evaluation.metrics import write_coco_results

        pairs = list(self.json_by_image.items())
        if accelerator.num_processes > 1:
            pairs = gather_object(pairs)
        merged: dict[str, list[dict[str, Any]]] = {}
        for path, records in pairs:
            merged.setdefault(path, records)
        if not accelerator.is_main_process:
            return None
        return write_coco_results(self.save_dir / "predictions.json", [r for rs in merged.values() for r in rs])


def _report(result: Any, names: list[str], save_dir: Path, verbose: bool, plots: bool) -> None:
    """The per-class table (logged) and the curves and confusion matrix (plotted) of a validation."""
    from accelyolo.core.logs import render_text
    from accelyolo.evaluation.reports import per_class_table, plot_confusion_matrix, plot_curves

    if verbose:
        LOGGER.info("%s", render_text(per_class_table(result, names)))
    if plots:
        plot_curves(result, names, save_dir)
        plot_confusion_matrix(result, names, save_dir)


def _segmentation_data(model: Any, weights: str, yaml_path: Path, meta: dict[str, Any], imgsz: int) -> Any:
    """The `SegmentationDataset` of the data.yaml's `seg_val` split for a multi-task model; a `DataError`
    when the data.yaml has no segmentation split or other segmentation classes than the model."""
    from accelyolo.core.errors import DataError
    from accelyolo.data.segmentation import SegmentationDataset, load_seg_spec
    from accelyolo.data.spec import DataConfigError

    spec = load_seg_spec(yaml_path)
    if spec is None:
        raise DataConfigError(
            f"{yaml_path}: the model {weights} also segments ({model.seg_classes} classes), but the data.yaml has "
            "no 'seg_train'; add seg_train, seg_val and seg_names, or pass --data with them"
        )
    names = list(meta.get("seg_names") or spec.names)
    if not model.seg_classes == len(names) == len(spec.names):
        raise DataError(
            f"{weights}: the model has {model.seg_classes} segmentation classes, the dataset {yaml_path} "
            f"{len(spec.names)} (key 'seg_names'); pass the data.yaml the model was trained on."
        )
    return SegmentationDataset(spec.splits["seg_val"], names, imgsz, augment=False, ignore=spec.ignore)


def _segmentation_metrics(
    model: Any, dataset: Any, batch_size: int, workers: int, accelerator: Any
) -> dict[str, float]:
    """Pixel accuracy and mIoU of a multi-task model on its segmentation split (table logged)."""
    from accelyolo.data.segmentation import build_seg_dataloader
    from accelyolo.evaluation.evaluators import evaluate_segmentation

    loader = accelerator.prepare(build_seg_dataloader(dataset, batch_size, workers, shuffle=False))
    seg = evaluate_segmentation(model, loader, accelerator, dataset.names, dataset.ignore, channels_last=True)
    if accelerator.is_main_process:
        LOGGER.info("segmentation (%d pixels):\n%s", seg.pixels, seg.table())
    return seg.as_dict()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options' flags where validation has the same option (`--conf-thres`, `--rect-val`, ...),
    with validation's defaults; `--conf`, `--iou` and `--no-rect` are kept as short spellings."""
    parser.add_argument("--weights", required=True, help="an accelyolo .safetensors or a YOLOv5/v8/11 .pt")
    add_option_flag(
        parser, "data", default=None, help="data.yaml or COCO .json (default: the data the model was trained on)"
    )
    add_option_flag(parser, "imgsz", default=None, help="image size (default: the training size)")
    add_option_flag(parser, "batch_size", "--batch", default=32, help="images per batch on each process")
    add_option_flag(parser, "conf_thres", "--conf", default=VAL_CONF_THRES, help="confidence threshold")
    add_option_flag(parser, "iou_thres", "--iou", default=VAL_IOU_THRES, help="NMS IoU threshold")
    add_option_flag(parser, "max_det", default=MAX_DET)
    add_option_flag(parser, "workers", default=2, help="dataloader worker processes per process")
    add_option_flag(parser, "rect_val", "--rect", default=True, help="rectangular (aspect-preserving) batches")
    add_option_flag(parser, "plots", default=True, help="write curves, confusion matrix and example images")
    add_option_flag(parser, "project", default="runs/val", help="parent folder of the validation folders")
    add_option_flag(parser, "name", default="exp")
    add_option_flag(parser, "exist_ok", default=False, help="reuse an existing folder")
    parser.add_argument("--save-json", action="store_true", help="write predictions.json (COCO results)")


def run(args: argparse.Namespace) -> int:
    from accelyolo.commands.cli import exit_status
    from accelyolo.core.errors import AccelyoloError

    try:
        out = validate(**vars(args))
    except AccelyoloError as error:  # a user's mistake: one message naming the file or key, exit status 2
        return exit_status("accelyolo val", error)
    from accelerate import PartialState

    if PartialState().is_main_process:
        m = out.metrics
        seg = f" pixel_accuracy={m['pixel_accuracy']:.4f} mIoU={m['mIoU']:.4f}" if "mIoU" in m else ""
        print(f"mAP50={m['mAP50']:.4f} mAP50-95={m['mAP50-95']:.4f}{seg}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accelyolo val", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

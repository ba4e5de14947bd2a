"""`accelyolo predict --weights FILE --source IMAGE|FOLDER` and `accelyolo.predict(...)`.

Each image is letterboxed to `imgsz`, run through the model (EMA weights when the checkpoint has them),
filtered by NMS and mapped back to original-image pixels. A multi-task model (detection +
segmentation) also gives each image's class-id mask at the original size (its logits cropped to the
letterboxed image and resized, bilinear, before the argmax); with `--save` the colour mask is written
beside the annotated image (`<stem>_mask.png`), and with `--save-masks` the class-id PNG too
(`<stem>_classes.png`, single channel, the ids of the checkpoint's `seg_names`). An exported multi-task
`.onnx` gives the same masks: `OnnxDetector` answers `model(x, x)` like the PyTorch model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelyolo.core.defaults import MAX_DET, PREDICT_CONF, PREDICT_IOU
from accelyolo.core.errors import SourceError
from accelyolo.core.flags import add_option_flag, takes_option_names

LOGGER = logging.getLogger(__name__)  # a child of "accelyolo", whose handler the CLI sets up


@dataclass
class Detections:
    """Detections of one image, in original-image pixels."""

    path: str
    boxes: Any  # np.ndarray (n, 4) x1 y1 x2 y2
    scores: Any  # np.ndarray (n,)
    classes: Any  # np.ndarray (n,) int
    names: list[str] = field(default_factory=list)  # class name of each detection
    mask: Any = None  # np.ndarray (H, W) uint8 class ids of a multi-task model, else None
    category_ids: list[int] | None = None  # a model trained on a COCO file: its category id per detection

    def to_dict(self) -> dict[str, Any]:
        detections = [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 5), "class": int(c), "name": n}
            for b, s, c, n in zip(self.boxes, self.scores, self.classes, self.names)
        ]
        for detection, category_id in zip(detections, self.category_ids or []):
            detection["category_id"] = category_id
        return {"path": self.path, "detections": detections}


def list_images(source: str | Path) -> list[Path]:
    """An image file, or the images of a folder (sorted, not recursive)."""
    from accelyolo.data.checks import IMG_SUFFIXES

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMG_SUFFIXES)
        if not files:
            raise SourceError(f"--source: no images ({', '.join(IMG_SUFFIXES)}) in '{source}'.")
        return files
    if source.is_file():
        return [source]
    raise SourceError(f"--source: '{source}' is neither an image nor a folder.")


@takes_option_names
def predict(
    weights: str,
    source: str,
    imgsz: int | None = None,
    conf_thres: float = PREDICT_CONF,
    iou_thres: float = PREDICT_IOU,
    max_det: int = MAX_DET,
    agnostic: bool = False,
    save: bool = False,
    project: str = "runs/predict",
    name: str = "exp",
    exist_ok: bool = False,
    device: str | None = None,
    save_masks: bool = False,
) -> list[Detections]:
    """Detect objects in `source` (an image or a folder). With `save`, annotated copies go to the run folder
    (and the colour mask of a multi-task model); `save_masks` also writes the class-id mask PNGs."""
    from accelyolo.core.config import check_detection_flags
    from accelyolo.core.runs import create_folder, increment_path
    from accelyolo.data.checks import load_rgb

    check_detection_flags(imgsz, conf_thres, iou_thres, max_det)
    images = list_images(source)  # a wrong --source fails before the model is loaded
    predictor = Predictor.load(weights, device, imgsz)
    nms = dict(conf_thres=conf_thres, iou_thres=iou_thres, agnostic=agnostic, max_det=max_det)
    save_dir = create_folder(increment_path(Path(project) / name, exist_ok)) if save or save_masks else None
    results = []
    for path in images:
        try:
            image = load_rgb(path)
        except Exception as exc:  # a corrupt file is reported and skipped, the others still run
            LOGGER.warning("predict: skipping '%s': cannot read it as an image (%s)", path, exc)
            continue
        results.append(predictor(path, image, **nms))
        if save_dir is not None:
            write_pictures(results[-1], image, predictor.names, save_dir, save_masks)
    if save_dir is not None:
        (save_dir / "predictions.json").write_text(json.dumps([r.to_dict() for r in results], indent=1))
    return results


@dataclass
class Predictor:
    """A loaded model (PyTorch, or an exported `.onnx` run by onnxruntime) with what its checkpoint says:
    class names, the COCO category ids it was trained on (if any) and the input size; called on one image,
    it letterboxes it, runs the model and NMS, and maps the boxes back to the image's pixels."""

    model: Any
    device: str
    names: list[str]
    category_ids: list[int] | None
    imgsz: int

    @classmethod
    def load(cls, weights: str, device: str | None, imgsz: int | None) -> Predictor:
        import torch

        from accelyolo.weights.importers import load_weights

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if Path(weights).suffix.lower() == ".onnx":  # an exported model, run by onnxruntime on the CPU
            from accelyolo.commands.export import OnnxDetector

            model, device = OnnxDetector(weights), "cpu"
            meta = model.metadata()
        else:  # an accelyolo bundle, or another tool's .pt imported without running its code
            model, meta = load_weights(weights)
            model = model.to(device).eval()
        names = list(meta.get("names") or [str(i) for i in range(model.nc)])
        imgsz = imgsz or int(meta.get("config", {}).get("imgsz", 640))
        return cls(model, device, names, meta.get("category_ids"), imgsz)

    def __call__(self, path: Path, image: Any, **nms: Any) -> Detections:
        """The detections of one RGB image (and its class-id mask for a multi-task model)."""
        import torch

        from accelyolo.core.boxes import non_max_suppression, scale_boxes
        from accelyolo.data.loader import to_model_input
        from accelyolo.data.transforms import letterbox

        boxed, ratio, pad = letterbox(image, (self.imgsz, self.imgsz))
        x = to_model_input(torch.from_numpy(boxed).permute(2, 0, 1)[None].to(self.device))  # (1, 3, S, S)
        segments = bool(getattr(self.model, "seg_classes", 0))  # multi-task, PyTorch or ONNX: (x, x) -> (det, logits)
        with torch.no_grad():
            out, logits = self.model(x, x) if segments else (self.model(x), None)
        out = out[0] if isinstance(out, (tuple, list)) else out
        (det,) = non_max_suppression(out.float(), **nms)
        det = det.cpu()
        det[:, :4] = scale_boxes(det[:, :4], ratio_pad=(ratio, pad), orig_shape=image.shape[:2])
        classes = det[:, 5].long().numpy()
        return Detections(
            str(path),
            det[:, :4].numpy(),
            det[:, 4].numpy(),
            classes,
            [self.names[c] if c < len(self.names) else str(c) for c in classes],
            mask=None if logits is None else class_mask(logits, ratio, pad, image.shape[:2]),
            category_ids=[int(self.category_ids[c]) for c in classes] if self.category_ids else None,
        )


def write_pictures(result: Detections, image: Any, names: list[str], save_dir: Path, save_masks: bool) -> None:
    """The annotated copy of one image (`<stem>.png`), and a multi-task model's colour mask
    (`<stem>_mask.png`) and, with `save_masks`, its class-id mask (`<stem>_classes.png`)."""
    from PIL import Image

    from accelyolo.evaluation.plots import draw_boxes

    stem = Path(result.path).stem
    if result.mask is not None:
        Image.fromarray(colour_mask(result.mask)).save(save_dir / f"{stem}_mask.png")
        if save_masks:
            Image.fromarray(result.mask).save(save_dir / f"{stem}_classes.png")
    drawn = draw_boxes(Image.fromarray(image), result.boxes, result.classes, names, scores=result.scores)
    drawn.save(save_dir / f"{stem}.png")


def class_mask(logits: Any, ratio: tuple[float, float], pad: tuple[int, int], shape: tuple[int, int]) -> Any:
    """(1, K, S, S) logits of a letterboxed image -> (H, W) uint8 class ids of the original image."""
    import torch.nn.functional as F

    (ry, rx), (left, top) = ratio, pad
    h, w = shape
    nh, nw = round(h * ry), round(w * rx)
    inner = logits[:, :, top : top + nh, left : left + nw].float()
    return F.interpolate(inner, size=(h, w), mode="bilinear", align_corners=False)[0].argmax(0).byte().cpu().numpy()


def colour_mask(mask: Any) -> Any:
    """(H, W) class ids -> (H, W, 3) uint8 RGB, one stable colour per class and black for class 0."""
    import numpy as np

    from accelyolo.evaluation.plots import class_colour

    lut = np.array([(0, 0, 0)] + [class_colour(c) for c in range(1, 256)], np.uint8)
    return lut[mask]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options' flags where prediction has the same option (`--conf-thres`, `--imgsz`, ...), with
    prediction's defaults; `--conf` and `--iou` are kept as short spellings."""
    parser.add_argument(
        "--weights", required=True, help="an accelyolo .safetensors, an exported .onnx, or a YOLOv5/v8/11 .pt"
    )
    parser.add_argument("--source", required=True, help="an image file or a folder of images")
    add_option_flag(parser, "imgsz", default=None, help="inference size (default: the training size)")
    add_option_flag(parser, "conf_thres", "--conf", default=PREDICT_CONF, help="confidence threshold")
    add_option_flag(parser, "iou_thres", "--iou", default=PREDICT_IOU, help="NMS IoU threshold")
    add_option_flag(parser, "max_det", default=MAX_DET, help="detections per image")
    parser.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--save", action="store_true", help="write annotated images and predictions.json")
    parser.add_argument(
        "--save-masks", action="store_true", help="multi-task models: also write the class-id mask PNG of each image"
    )
    add_option_flag(parser, "project", default="runs/predict", help="parent folder of the prediction folders")
    add_option_flag(parser, "name", default="exp")
    add_option_flag(parser, "exist_ok", default=False, help="reuse an existing folder")


def run(args: argparse.Namespace) -> int:
    from accelyolo.commands.cli import exit_status
    from accelyolo.core.errors import AccelyoloError

    try:
        results = predict(**vars(args))
    except AccelyoloError as error:  # a user's mistake: one message naming the file or key, exit status 2
        return exit_status("accelyolo predict", error)
    for r in results:
        found = ", ".join(f"{n} {s:.2f}" for n, s in zip(r.names, r.scores)) or "nothing"
        print(f"{r.path}: {found}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accelyolo predict", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

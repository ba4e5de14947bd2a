"""`accelyolo predict --weights FILE --source IMAGE|FOLDER` and `accelyolo.predict(...)`.

Each image is letterboxed to `imgsz`, run through the model (EMA weights when the checkpoint has them),
filtered by NMS and mapped back to original-image pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


@dataclass
class Detections:
    """Detections of one image, in original-image pixels."""

    path: str
    boxes: Any  # np.ndarray (n, 4) x1 y1 x2 y2
    scores: Any  # np.ndarray (n,)
    classes: Any  # np.ndarray (n,) int
    names: list[str] = field(default_factory=list)  # class name of each detection

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "detections": [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 5), "class": int(c), "name": n}
            for b, s, c, n in zip(self.boxes, self.scores, self.classes, self.names)]}


def list_images(source: str | Path) -> list[Path]:
    """An image file, or the images of a folder (sorted, not recursive)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"--source: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in '{source}'.")
        return files
    if source.is_file():
        return [source]
    raise FileNotFoundError(f"--source: '{source}' is neither an image nor a folder.")


def predict(
    weights: str,
    source: str,
    imgsz: int | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    agnostic: bool = False,
    save: bool = False,
    project: str = "runs/predict",
    name: str = "exp",
    exist_ok: bool = False,
    device: str | None = None,
) -> list[Detections]:
    """Detect objects in `source` (an image or a folder). With `save`, annotated copies go to the run folder."""
    import torch

    from accelyolo.boxes import non_max_suppression, scale_boxes
    from accelyolo.data.checks import load_rgb
    from accelyolo.data.transforms import letterbox
    from accelyolo.runs import increment_path
    from accelyolo.weights.importers import load_weights

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if Path(weights).suffix.lower() == ".onnx":  # an exported model, run by onnxruntime on the CPU
        from accelyolo.exporter import OnnxDetector

        model, device = OnnxDetector(weights), "cpu"
        meta = model.metadata()
    else:  # an accelyolo bundle, or another tool's .pt imported without running its code
        model, meta = load_weights(weights)
        model = model.to(device).eval()
    names = list(meta.get("names") or [str(i) for i in range(model.nc)])
    imgsz = imgsz or int(meta.get("config", {}).get("imgsz", 640))
    save_dir = None
    if save:
        save_dir = increment_path(Path(project) / name, exist_ok)
        save_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in list_images(source):
        try:
            image = load_rgb(path)
        except Exception as exc:  # a corrupt file is reported and skipped, the others still run
            print(f"accelyolo predict: skipping '{path}': cannot read it as an image ({exc})", file=sys.stderr)
            continue
        boxed, ratio, pad = letterbox(image, (imgsz, imgsz))
        x = torch.from_numpy(boxed).permute(2, 0, 1)[None].to(device).float() / 255.0  # (1, 3, S, S)
        with torch.no_grad():
            out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        det = non_max_suppression(out.float(), conf_thres=conf, iou_thres=iou, agnostic=agnostic,
                                  max_det=max_det)[0].cpu()
        det[:, :4] = scale_boxes(det[:, :4], ratio_pad=(ratio, pad), orig_shape=image.shape[:2])
        classes = det[:, 5].long().numpy()
        result = Detections(str(path), det[:, :4].numpy(), det[:, 4].numpy(), classes,
                            [names[c] if c < len(names) else str(c) for c in classes])
        results.append(result)
        if save_dir is not None:
            from PIL import Image

            from accelyolo.plots import draw_boxes

            drawn = draw_boxes(Image.fromarray(image), result.boxes, result.classes, names, scores=result.scores)
            drawn.save(save_dir / f"{path.stem}.png")
    if save_dir is not None:
        (save_dir / "predictions.json").write_text(json.dumps([r.to_dict() for r in results], indent=1))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", required=True, help="an accelyolo .safetensors, an exported .onnx, or a YOLOv5/v8/11 .pt"
    )
    parser.add_argument("--source", required=True, help="an image file or a folder of images")
    parser.add_argument("--imgsz", type=int, default=None, help="inference size (default: the training size)")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--save", action="store_true", help="write annotated images and predictions.json")
    parser.add_argument("--project", default="runs/predict")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--exist-ok", action="store_true")


def run(args: argparse.Namespace) -> int:
    from accelyolo.checkpoint import CheckpointError

    try:
        results = predict(**vars(args))
    except (CheckpointError, FileNotFoundError, ValueError) as exc:  # ValueError: a refused .pt / .onnx
        print(f"accelyolo predict: {exc}", file=sys.stderr)
        return 2
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

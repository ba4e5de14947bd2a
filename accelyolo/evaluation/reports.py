"""Validation reports: PR/F1/P/R curves and the confusion matrix as PNGs, a per-class table.

Plots are drawn with Pillow (no matplotlib dependency): a small line-plot helper draws axes,
grid, per-class thin lines, the mean as a thick line and a legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.table import Table

from accelyolo.evaluation.metrics import DetectionResult, smooth_curve

# 20 distinct line colours (the "tab20"-style qualitative palette), then repeated.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
MEAN_COLOR = "#0b3d91"
GRID_COLOR = "#dddddd"
MAX_LEGEND_CLASSES = 20  # above this only the mean line gets a legend entry
MAX_NAMED_AXIS = 100  # confusion matrix: class names on the axes up to this many rows
MAX_ANNOTATED_CELLS = 30  # ... and values written in the cells up to this many rows
BLUES = np.array([[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font; the fixed bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType support
        return ImageFont.load_default()


def _name(names: Sequence[str] | None, index: int) -> str:
    return str(names[index]) if names is not None and index < len(names) else str(index)


class _LinePlot:
    """A [0, 1] x [0, 1] line plot with grid, labels and a legend to the right."""

    def __init__(self, title: str, xlabel: str, ylabel: str, legend: bool) -> None:
        self.size = (1400 if legend else 1000, 900)
        self.box = (110, 70, 930, 790)  # plot area: left, top, right, bottom
        self.image = Image.new("RGB", self.size, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.small = _font(22), _font(16)
        self.legend: list[tuple[str, str, int]] = []
        self._axes(title, xlabel, ylabel)

    def _xy(self, x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        left, top, right, bottom = self.box
        px = left + np.clip(x, 0, 1) * (right - left)
        py = bottom - np.clip(y, 0, 1.0) * (bottom - top)
        return list(zip(px.tolist(), py.tolist(), strict=True))

    def _axes(self, title: str, xlabel: str, ylabel: str) -> None:
        left, top, right, bottom = self.box
        for v in np.linspace(0, 1, 6):
            (gx, gy), *_ = self._xy(np.array([v]), np.array([v]))
            self.draw.line([(gx, top), (gx, bottom)], fill=GRID_COLOR, width=1)
            self.draw.line([(left, gy), (right, gy)], fill=GRID_COLOR, width=1)
            self.draw.text((gx, bottom + 10), f"{v:.1f}", fill="black", font=self.small, anchor="mt")
            self.draw.text((left - 10, gy), f"{v:.1f}", fill="black", font=self.small, anchor="rm")
        self.draw.rectangle(self.box, outline="black", width=2)
        self.draw.text(((left + right) / 2, 20), title, fill="black", font=self.font, anchor="mt")
        self.draw.text(((left + right) / 2, bottom + 45), xlabel, fill="black", font=self.font, anchor="mt")
        label = Image.new("RGBA", (400, 40), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((200, 20), ylabel, fill="black", font=self.font, anchor="mm")
        label = label.rotate(90, expand=True)
        self.image.paste(label, (20, int((top + bottom) / 2 - 200)), label)

    def line(self, x: np.ndarray, y: np.ndarray, color: str, width: int, label: str | None) -> None:
        self.draw.line(self._xy(x, y), fill=color, width=width, joint="curve")
        if label is not None:
            self.legend.append((label, color, width))

    def save(self, path: Path) -> Path:
        x, y = self.box[2] + 25, self.box[1]
        for label, color, width in self.legend:
            if y > self.size[1] - 30:
                break
            self.draw.line([(x, y + 10), (x + 40, y + 10)], fill=color, width=max(width, 3))
            self.draw.text((x + 50, y + 10), label, fill="black", font=self.small, anchor="lm")
            y += 26 if width > 2 else 22
        self.image.save(path)
        return path


def _curve_plot(
    res: DetectionResult,
    names: Sequence[str] | None,
    curves: np.ndarray,
    kind: str,
    path: Path,
) -> Path:
    """One of the confidence curves (F1, P, R): per class thin, smoothed mean thick."""
    many = res.classes.size > MAX_LEGEND_CLASSES
    plot = _LinePlot(f"{kind}-Confidence Curve", "Confidence", kind, legend=True)
    for k, c in enumerate(res.classes):
        label = None if many else _name(names, int(c))
        plot.line(res.conf_grid, curves[k], PALETTE[k % len(PALETTE)], 1 if many else 2, label)
    if res.classes.size:
        mean = smooth_curve(curves.mean(axis=0))
        best = int(mean.argmax())
        label = f"all classes {mean[best]:.2f} at {res.conf_grid[best]:.3f}"
        plot.line(res.conf_grid, mean, MEAN_COLOR, 5, label)
    return plot.save(path)


def plot_curves(res: DetectionResult, names: Sequence[str] | None, save_dir: str | Path) -> list[Path]:
    """Write PR_curve.png, F1_curve.png, P_curve.png and R_curve.png into `save_dir`.

    Returns:
        The written paths.
    """
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    many = res.classes.size > MAX_LEGEND_CLASSES
    pr = _LinePlot("Precision-Recall Curve (IoU 0.5)", "Recall", "Precision", legend=True)
    for k, c in enumerate(res.classes):
        label = None if many else f"{_name(names, int(c))} {res.ap50[k]:.3f}"
        color = PALETTE[k % len(PALETTE)]
        pr.line(res.pr_recall, res.pr_precision[k], color, 1 if many else 2, label)
    if res.classes.size:
        label = f"all classes {res.map50:.3f} mAP@0.5"
        pr.line(res.pr_recall, res.pr_precision.mean(axis=0), MEAN_COLOR, 5, label)
    paths = [pr.save(save_dir / "PR_curve.png")]
    for kind, curves in (("F1", res.f1_curve), ("Precision", res.p_curve), ("Recall", res.r_curve)):
        name = {"F1": "F1", "Precision": "P", "Recall": "R"}[kind]
        paths.append(_curve_plot(res, names, curves, kind, save_dir / f"{name}_curve.png"))
    return paths


def _blues(values: np.ndarray) -> np.ndarray:
    """Map [0, 1] to a white-to-dark-blue ramp; returns uint8 RGB of shape values.shape + (3,)."""
    pos = np.clip(values, 0, 1) * (len(BLUES) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(BLUES) - 2)
    frac = (pos - lo)[..., None]
    return (BLUES[lo] * (1 - frac) + BLUES[lo + 1] * frac).round().astype(np.uint8)


def plot_confusion_matrix(res: DetectionResult, names: Sequence[str] | None, save_dir: str | Path) -> Path:
    """Write confusion_matrix.png: columns (true class) normalised to sum to 1.

    Class names label the axes when there are at most `MAX_NAMED_AXIS` rows, and the cell values
    are written when there are at most `MAX_ANNOTATED_CELLS`; near-zero cells stay blank.
    """
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    matrix = res.confusion.astype(np.float64)
    n = matrix.shape[0]
    norm = matrix / (matrix.sum(axis=0, keepdims=True) + 1e-9)  # (n, n) per true class
    norm[norm < 0.005] = 0.0
    labels = [_name(names, i) for i in range(n - 1)] + ["background"]
    named = n <= MAX_NAMED_AXIS
    cell = int(np.clip(1400 // n, 12, 80))
    font = _font(int(np.clip(cell * 0.7, 9, 20)))
    margin = (max(font.getlength(s) for s in labels) + 60) if named else 60
    left, top = int(margin) + 40, 80
    title, title_font = "Confusion Matrix (columns normalised by true class)", _font(24)
    width = max(left + cell * n + 140, int(title_font.getlength(title)) + 40)
    size = (width, top + cell * n + int(margin))
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    heat = Image.fromarray(_blues(norm)).resize((cell * n, cell * n), Image.Resampling.NEAREST)
    image.paste(heat, (left, top))
    draw.text((size[0] / 2, 25), title, fill="black", font=title_font, anchor="mt")
    for i, label in enumerate(labels if named else []):
        mid = left + cell * i + cell / 2
        draw.text((left - 8, top + cell * i + cell / 2), label, fill="black", font=font, anchor="rm")
        tag = Image.new("RGBA", (int(font.getlength(label)) + 4, cell), (255, 255, 255, 0))
        ImageDraw.Draw(tag).text((0, cell / 2), label, fill="black", font=font, anchor="lm")
        tag = tag.rotate(90, expand=True)
        image.paste(tag, (int(mid - cell / 2), top + cell * n + 8 + 0), tag)
    if n <= MAX_ANNOTATED_CELLS:
        for (row, col), v in np.ndenumerate(norm):
            if v > 0:
                xy = (left + cell * col + cell / 2, top + cell * row + cell / 2)
                color = "white" if v > 0.5 else "black"
                draw.text(xy, f"{v:.2f}", fill=color, font=_font(max(cell // 4, 8)), anchor="mm")
    draw.rectangle((left, top, left + cell * n, top + cell * n), outline="black")
    axis_font = _font(22)
    draw.text((left + cell * n / 2, size[1] - 10), "True", fill="black", font=axis_font, anchor="md")
    label = Image.new("RGBA", (200, 40), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((100, 20), "Predicted", fill="black", font=axis_font, anchor="mm")
    label = label.rotate(90, expand=True)
    image.paste(label, (5, top + cell * n // 2 - 100), label)
    _colorbar(draw, image, (left + cell * n + 30, top), cell * n)
    path = save_dir / "confusion_matrix.png"
    image.save(path)
    return path


def _colorbar(draw: ImageDraw.ImageDraw, image: Image.Image, at: tuple[int, int], height: int) -> None:
    """A vertical 0..1 colour scale with ticks, drawn at `at` (top-left) over `height` pixels."""
    ramp = _blues(np.linspace(1, 0, height))[:, None, :].repeat(24, axis=1)  # (H, 24, 3)
    image.paste(Image.fromarray(ramp), at)
    x, y = at
    draw.rectangle((x, y, x + 24, y + height), outline="black")
    for v in np.linspace(0, 1, 6):
        ty = y + (1 - v) * height
        draw.line([(x + 24, ty), (x + 30, ty)], fill="black")
        draw.text((x + 34, ty), f"{v:.1f}", fill="black", font=_font(14), anchor="lm")


def per_class_table(res: DetectionResult, names: Sequence[str] | None) -> Table:
    """A rich table: class, images, instances, P, R, mAP50, mAP50-95; first row "all"."""
    table = Table(title="Validation", show_lines=False)
    table.add_column("Class", style="bold")
    for column in ("Images", "Instances", "P", "R", "mAP50", "mAP50-95"):
        table.add_column(column, justify="right")
    total = int(res.n_instances.sum())
    table.add_row("all", str(res.seen), str(total), *(f"{v:.3f}" for v in (res.mp, res.mr, res.map50, res.map)))
    for k, c in enumerate(res.classes):
        values = (res.p[k], res.r[k], res.ap50[k], res.ap[k])
        table.add_row(
            _name(names, int(c)),
            str(int(res.n_images[c])),
            str(int(res.n_instances[c])),
            *(f"{v:.3f}" for v in values),
        )
    return table

"""Where a split's labels come from: YOLO txt files beside the images, a COCO file or a Hugging Face dataset.

Every split is a list of image files (`DataSpec.splits[key]`); a split read from an annotation file is a
`SplitImages`, the same list carrying the `source` that checks its labels, so the dataset, the loaders,
DDP sharding and `data check` take every format the same way. `checked_entries` is the one place that
picks the reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from accelyolo.data.cache import load_or_build
from accelyolo.data.checks import check_image_label


class LabelSource(Protocol):
    """What an annotation reader gives a split (`accelyolo.data.coco.CocoSource`, `accelyolo.data.hf.HfSource`)."""

    where: str  # the file or dataset split, for messages
    names: list[str]
    category_ids: list[int] | None  # the id of each class index in the source; None: the index itself

    def checked_entries(
        self, nc: int | None, fallback_dir: Path | None = None
    ) -> tuple[list[dict[str, Any]], Path | None, bool]: ...

    def image_ids(self) -> dict[str, Any]: ...


class SplitImages(list):
    """The image files of a split whose labels come from `source` rather than from txt files."""

    def __init__(self, images: Iterable[Path], source: LabelSource) -> None:
        super().__init__(images)
        self.source = source


def source_of(images: Sequence[Path]) -> LabelSource | None:
    """The annotation-file source of a split; None for YOLO txt labels."""
    return getattr(images, "source", None)


def checked_entries(
    images: Sequence[Path], nc: int | None, fallback_dir: Path | None = None
) -> tuple[list[dict[str, Any]], Path | None, bool]:
    """The checked entries of a split, `(entries, cache file or None, cache hit)`, whatever its format."""
    source = source_of(images)
    if source is not None:
        return source.checked_entries(nc, fallback_dir)
    return load_or_build([Path(p) for p in images], nc, check_image_label, fallback_dir)

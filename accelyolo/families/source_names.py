"""Renaming another tool's state dict (`model.<layer index>.<rest>`) into ours, layer by layer.

The YOLOv5 repository and ultralytics keep every layer of a detector in one `nn.Sequential` called
`model`, numbered in the order of their yaml layer tables; parameter-free layers (Upsample, Concat)
take an index too. A family lists which index is which of our modules; the names inside a block
(`cv1`, `m.0.cv2`, `conv`, `bn`) are the same on both sides because the blocks have the same structure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["layer_indices", "remap_layers"]

_LAYER = re.compile(r"^model\.(\d+)\.(.+)$")


def layer_indices(source: Mapping[str, Any]) -> set[int]:
    """The layer indices that hold tensors, from names `model.<i>.*` (other names are ignored)."""
    return {int(m.group(1)) for m in map(_LAYER.match, source) if m}


def remap_layers(
    source: Mapping[str, Any],
    layers: Mapping[int, str],
    head: int,
    rename_head: Callable[[str], str | None],
) -> dict[str, Any]:
    """Our names for every tensor of `source`.

    Args:
        source: the foreign state dict, names `model.<i>.<rest>`.
        layers: source layer index -> our module prefix, e.g. {0: "backbone.stages.0", 12: "neck.blocks.0"}.
        head: the source index of the detection head.
        rename_head: the head's `<rest>` -> our full name, or None for a tensor we do not keep.

    Raises:
        KeyError: a name outside `model.<i>.*`, or a tensor in a layer this map does not know.
    """
    out: dict[str, Any] = {}
    for name, tensor in source.items():
        match = _LAYER.match(name)
        if match is None:
            raise KeyError(f"{name!r} is not a layer tensor (expected model.<index>.<name>)")
        index, rest = int(match.group(1)), match.group(2)
        if index == head:
            ours = rename_head(rest)
            if ours is None:
                continue
        elif index in layers:
            ours = f"{layers[index]}.{rest}"
        else:
            raise KeyError(f"{name!r}: layer {index} has tensors but no counterpart in this family's name map")
        out[ours] = tensor
    return out

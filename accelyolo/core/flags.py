"""The command line's face of `TrainConfig`: one flag per option, named, typed and explained by its field.

`train` and `evolve` take every option (`add_config_arguments`); `val`, `predict` and `export` add the flags
of the options they share with training (`add_option_flag`), so an option has one name everywhere: recipe
key, flag, `fit()` keyword and `validate()`/`predict()` keyword (`takes_option_names`).
"""

from __future__ import annotations

import argparse
import functools
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any

import yaml

from accelyolo.core.config import CONCEPTS, field_types, fields_by_name


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field (`--batch-size`), plus `--recipe` and `--hyp`."""
    parser.add_argument("--recipe", default=None, help="recipe yaml (path or shipped name, e.g. demo)")
    parser.add_argument("--hyp", default=None, help="hyperparameter yaml (YOLOv5 hyp.*.yaml style)")
    for concept, keys in CONCEPTS.items():
        group = parser.add_argument_group(concept)
        for key in keys:
            add_option_flag(group, key, *(["--batch"] if key == "batch_size" else []))


def option_flag(key: str) -> str:
    """The command-line flag of the option `key`: `batch_size` -> `--batch-size`."""
    return "--" + key.replace("_", "-")


def add_option_flag(
    parser: Any, key: str, *aliases: str, default: Any = argparse.SUPPRESS, help: str | None = None
) -> None:
    """Add the flag of the `TrainConfig` field `key` to `parser` (a parser or argument group): the field's
    flag name, `dest`, type and help, so that `train`, `val`, `predict` and `evolve` name and parse an option
    alike. `aliases` are further spellings; `default` is the command's own default (none: the option is
    absent from the namespace unless given, as `train` needs); `help` replaces the field's text."""
    f = fields_by_name()[key]
    text = (help or f.metadata["help"]).replace("%", "%%")  # argparse %-formats help strings
    kind = field_types()[key]
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    base = next(a for a in allowed if a is not type(None))
    shown = f.default if default is argparse.SUPPRESS else default
    text += "" if shown is None else f" (default: {shown})"
    if base is bool:
        parser.add_argument(
            option_flag(key), *aliases, dest=key, default=default, action=argparse.BooleanOptionalAction, help=text
        )
        return
    # `--resume` alone means `--resume auto`, as in YOLOv5.
    more = {"nargs": "?", "const": "auto"} if key == "resume" else {}
    parser.add_argument(
        option_flag(key),
        *aliases,
        dest=key,
        default=default,
        type=_parse_optional(base),
        metavar=base.__name__.upper(),
        help=text,
        **more,
    )


# Keywords of `validate()` and `predict()` that now carry the option's own name (`conf_thres`, as in a recipe,
# `fit()` and every flag); the old names still work, with a FutureWarning.
RENAMED_KEYWORDS = {"conf": "conf_thres", "iou": "iou_thres", "rect": "rect_val"}


def takes_option_names(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` called with an old keyword of `RENAMED_KEYWORDS` gets it under the option's name, with a
    FutureWarning; both names at once are a TypeError."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        for old, new in RENAMED_KEYWORDS.items():
            if old not in kwargs:
                continue
            if new in kwargs:
                raise TypeError(f"{function.__name__}() got both '{old}' and '{new}': they are the same option")
            warnings.warn(
                f"{function.__name__}(): '{old}' is now '{new}', the option's name everywhere",
                FutureWarning,
                stacklevel=2,
            )
            kwargs[new] = kwargs.pop(old)
        return function(*args, **kwargs)

    return call


def _parse_optional(base: type):
    def parse(text: str):
        if text.lower() in ("", "none", "null"):
            return None
        if base is dict:  # a yaml mapping on the command line: --scheduler-args "{max_lr: 0.01}"
            value = yaml.safe_load(text)
            if not isinstance(value, dict):
                raise argparse.ArgumentTypeError(f"expected a yaml mapping such as '{{key: value}}', got {text!r}")
            return value
        if base is list:  # a yaml list on the command line: --anchors "[[10,13, 16,30], ...]"
            value = yaml.safe_load(text)
            if not isinstance(value, list):
                raise argparse.ArgumentTypeError(f"expected a yaml list such as '[[10,13, 16,30], ...]', got {text!r}")
            return value
        return base(text)

    parse.__name__ = base.__name__
    return parse


def config_from_args(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """Split parsed flags into (recipe, overrides) for `load_config`."""
    overrides = dict(vars(args))
    recipe = overrides.pop("recipe", None)
    if overrides.get("hyp") is None:
        overrides.pop("hyp", None)
    return recipe, overrides

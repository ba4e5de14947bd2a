"""The library's one output channel: the `accelyolo` logger, shown through rich on the main process.

Library code logs (`logging.getLogger("accelyolo")`) and never prints. `setup_logging` gives that logger
a `RichHandler` on the main process and lets only warnings through on the other ranks, so a 2-process run
prints each message once. It changes nothing when the application configured logging itself (a handler
on the `accelyolo` logger or on the root logger, e.g. `logging.basicConfig` or pytest's capture).
"""

from __future__ import annotations

import logging
import os

LOGGER_NAME = "accelyolo"


class _Formatter(logging.Formatter):
    """The message alone; warnings and errors say so in front."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup_logging(main_process: bool = True) -> None:
    """Show accelyolo's messages: INFO and up on the main process, WARNING and up on the others."""
    logger = logging.getLogger(LOGGER_NAME)
    ours = [h for h in logger.handlers if getattr(h, "_accelyolo", False)]
    if logger.handlers and not ours or (not ours and logging.getLogger().handlers):
        return  # the application decides where log records go
    level = logging.INFO if main_process else logging.WARNING
    if not ours:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True, soft_wrap=True),
            show_time=False,
            show_level=False,
            show_path=False,
            markup=False,
            rich_tracebacks=False,
            highlighter=None,
        )
        handler.setFormatter(_Formatter("%(message)s"))
        handler._accelyolo = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)


def render_text(renderable: object, width: int = 120) -> str:
    """A rich renderable (a table) as plain text, for the log."""
    from rich.console import Console

    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text().rstrip()

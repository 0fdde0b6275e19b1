"""Progress of long work: a tqdm bar on a terminal, plain log lines elsewhere (CI, Beam
workers, redirected output), from the same call."""

import logging
import sys

from tqdm import tqdm

# Seconds between log lines when there is no terminal to draw a bar on.
LOG_EVERY_S = 10.0


class _LogLines:
    """A file-like target for tqdm that turns each redraw into one log line."""

    def __init__(self, logger: logging.Logger):
        self._logger = logger

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            self._logger.info("%s", line)

    def flush(self) -> None:
        pass


def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "it",
             interactive: bool | None = None, log_every_s: float | None = LOG_EVERY_S,
             logger: logging.Logger | None = None) -> tqdm:
    """tqdm over `iterable` (or a bar to .update() by hand).

    interactive: draw a bar (default: when stderr is a terminal); else a line to `logger`
    (default: this module's) at most every `log_every_s` seconds and one at the end.
    log_every_s=None shows nothing (work too short to report).
    """
    if log_every_s is None:
        return tqdm(iterable, total=total, disable=True)
    if interactive is None:
        interactive = sys.stderr.isatty()
    if interactive:
        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, ascii=True, ncols=80,
                mininterval=log_every_s, maxinterval=log_every_s,
                file=_LogLines(logger or logging.getLogger(__name__)))

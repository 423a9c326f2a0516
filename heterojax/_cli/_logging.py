"""Console and log-file logging for the CLI (`-v`/`-q`, a log file in the output folder)."""

import logging
import os
import sys


LOGGER = "heterojax"
RECORD = "heterojax.record"  # file only: summaries that are also printed to stdout
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def console_level(verbosity: int) -> int:
    """-q → ERROR, default → INFO, -v → DEBUG."""
    if verbosity < 0:
        return logging.ERROR
    return logging.DEBUG if verbosity > 0 else logging.INFO


class Logging:
    """The CLI's handlers on the `heterojax` logger; `close()` removes them again (the CLI
    can run several times in one process, e.g. in tests)."""

    def __init__(self, verbosity: int):
        self.verbosity = verbosity
        self.logger = logging.getLogger(LOGGER)
        self.record = logging.getLogger(RECORD)
        self.record.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.record.setLevel(logging.DEBUG)
        self.console = logging.StreamHandler(sys.stderr)
        self.console.setLevel(console_level(verbosity))
        self.console.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(self.console)
        self.file: logging.Handler | None = None

    def to_file(self, directory: str, name: str = "heterojax.log") -> str:
        """Also log (everything, DEBUG included) to `directory/name`, appending."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        self.file = logging.FileHandler(path, mode="a", encoding="utf-8")
        self.file.setLevel(logging.DEBUG)
        self.file.setFormatter(logging.Formatter(_FILE_FORMAT))
        self.logger.addHandler(self.file)
        self.record.addHandler(self.file)
        return path

    def close(self) -> None:
        for handler in (self.console, self.file):
            if handler is None:
                continue
            self.logger.removeHandler(handler)
            self.record.removeHandler(handler)
            handler.close()


def report(text: str, *, quiet: bool) -> None:
    """Prints `text` to stdout (unless quiet) and writes it to the log file."""
    if not quiet:
        print(text, flush=True)
    logging.getLogger(RECORD).info("\n" + text)

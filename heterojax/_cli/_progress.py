"""Progress display: an elapsed-time bar around NLSQ, a bar with ETA for CMC sampling."""

import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator


_LOG = logging.getLogger("heterojax.cli")
# The sampler's progress lines: "[heterojax.fit_cmc] warmup: 50/500 ( 10 %)   3.2 s".
_CMC_LINE = re.compile(r"\[heterojax\.fit_cmc\]\s+(\w[\w ]*):\s+(\d+)/(\d+)")


def _tqdm():
    try:
        from tqdm.auto import tqdm

        return tqdm
    except ImportError:
        return None


def _interactive(enabled: bool) -> bool:
    return enabled and sys.stderr.isatty() and _tqdm() is not None


@contextlib.contextmanager
def elapsed(description: str, *, enabled: bool) -> Iterator[None]:
    """A ticking "description: 12 s" line while the block runs (a single compiled solve has
    no intermediate progress to report, so this shows time, not a fraction)."""
    began = time.perf_counter()
    _LOG.info(f"{description} …")
    if not _interactive(enabled):
        yield
        _LOG.info(f"{description}: done in {time.perf_counter() - began:.1f} s")
        return
    tqdm = _tqdm()
    assert tqdm is not None
    bar = tqdm(
        total=None, desc=description, bar_format="{desc}: {elapsed}", file=sys.stderr, leave=False
    )
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()
    _LOG.info(f"{description}: done in {time.perf_counter() - began:.1f} s")


class _SamplerStream:
    """Stands in for stderr while the sampler runs: its progress lines drive a tqdm bar (with
    ETA) or go to the log; everything else passes through unchanged."""

    def __init__(self, target, warmup: int, samples: int, interactive: bool):
        self.target = target
        self.warmup = warmup
        self.total = warmup + samples
        self.bar = None
        if interactive:
            tqdm = _tqdm()
            assert tqdm is not None
            self.bar = tqdm(
                total=self.total, desc="CMC warmup", unit="step", file=target, leave=False
            )
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        match = _CMC_LINE.search(line)
        if match is None:
            if line.strip():
                self.target.write(line + "\n")
            return
        phase, done = match.group(1), int(match.group(2))
        position = done if phase.startswith("warmup") else self.warmup + done
        if phase.startswith("warmup") or phase.startswith("sampling"):
            if self.bar is not None:
                self.bar.set_description(f"CMC {phase}")
                self.bar.update(max(min(position, self.total) - self.bar.n, 0))
                return
        total = int(match.group(3))
        level = logging.INFO if done == total else logging.DEBUG
        _LOG.log(level, line.replace("[heterojax.fit_cmc] ", "CMC ").rstrip())

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        if self.pending.strip():
            self._line(self.pending)
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def sampler_progress(warmup: int, samples: int, *, enabled: bool) -> Iterator[None]:
    """Turns `fit_cmc`'s progress lines into a progress bar with ETA (interactive terminal)
    or log lines (otherwise) while the block runs."""
    stream = _SamplerStream(sys.stderr, warmup, samples, _interactive(enabled))
    try:
        with contextlib.redirect_stderr(stream):  # pyright: ignore[reportArgumentType]
            yield
    finally:
        stream.close()

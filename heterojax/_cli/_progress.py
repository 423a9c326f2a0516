"""Progress display: bars with ETA for the NLSQ steps and for CMC sampling."""

import contextlib
import logging
import re
import sys
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
def nlsq_progress(description: str, max_steps: int, *, enabled: bool) -> Iterator[object]:
    """Yields the `progress` argument for `fit_nlsq`: a callable `(step, chi2)` that drives a
    bar of LM steps with the χ² reached and the time left at the current rate for the step
    budget (an upper bound: LM usually stops well before `max_steps`). Not interactive: a log
    line every 5 s. Disabled: `False` (the fit then keeps no host callback)."""
    if not enabled:
        yield False
        return
    began = time.perf_counter()
    _LOG.info(f"{description} …")
    if not _interactive(enabled):
        last = [0.0]

        def log_step(step: int, chi2: float) -> None:
            now = time.perf_counter() - began
            if now - last[0] >= 5.0:
                last[0] = now
                _LOG.info(f"{description}: step {step}, χ² = {chi2:.6g}, {now:.0f} s")

        yield log_step
        _LOG.info(f"{description}: done in {time.perf_counter() - began:.1f} s")
        return
    tqdm = _tqdm()
    assert tqdm is not None
    bar = tqdm(
        total=max_steps,
        desc=description,
        bar_format="{desc}: step {n_fmt} {postfix}  {elapsed} (≤ {remaining} left)",
        file=sys.stderr,
        leave=False,
    )

    def show_step(step: int, chi2: float) -> None:
        bar.update(max(step - bar.n, 0))
        bar.set_postfix_str(f"χ² = {chi2:.6g}", refresh=True)

    try:
        yield show_step
    finally:
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

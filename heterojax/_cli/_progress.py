"""Progress display (tqdm, one display per phase): the NLSQ steps with the best χ² so far, and
CMC warmup/sampling with ETA; plain log lines when stderr is not a terminal."""

import contextlib
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterator


_LOG = logging.getLogger("heterojax.cli")
# The sampler's progress lines: "[heterojax.fit_cmc] warmup: 50/500 ( 10 %)   3.2 s".
_CMC_LINE = re.compile(r"\[heterojax\.fit_cmc\]\s+(\w[\w ]*):\s+(\d+)/(\d+)")
# Chains run side by side: "[heterojax.fit_cmc] chains: 640/3200 steps ( 20 %)  (chain 1:
# warmup 300/300; chain 2: warmup 20/300)  3.2 s", the steps of all chains together.
_CHAIN_LINE = re.compile(r"\[heterojax\.fit_cmc\]\s+chains:\s+(\d+)/(\d+) steps")
# A round of more draws (`fit_cmc(max_samples=...)`): "[heterojax.fit_cmc] an ESS 1.33× short
# of its threshold: 300 more draws per chain (800 in all)".
_MORE_LINE = re.compile(r"\[heterojax\.fit_cmc\].*:\s+(\d+) more draws per chain")
# shards="auto" starts again with fewer shards: "[heterojax.fit_cmc] K = 4 shards are not
# Gaussian (phi0: …): sampling again with K = 2" (warmup and draws again).
_AGAIN_LINE = re.compile(r"\[heterojax\.fit_cmc\].*: sampling again with K = \d+")


def _tqdm():
    try:
        from tqdm.auto import tqdm

        return tqdm
    except ImportError:
        return None


def _interactive(enabled: bool) -> bool:
    return enabled and sys.stderr.isatty() and _tqdm() is not None


def best_so_far(show: Callable[[int, float], None]) -> Callable[[int, float], None]:
    """Wraps a `(step, χ²)` display so that it shows the lowest χ² reached so far.

    The solver reports each start of a batch in turn (and χ² = 0 before its first
    evaluation), so the last value reported is neither the best nor always a χ²; a step
    without any χ² yet is shown as NaN.
    """
    best = [math.inf]

    def show_best(step: int, chi2: float) -> None:
        if math.isfinite(chi2) and chi2 > 0:
            best[0] = min(best[0], chi2)
        show(step, best[0] if math.isfinite(best[0]) else math.nan)

    return show_best


def _chi2_text(chi2: float) -> str:
    return "χ² = …" if math.isnan(chi2) else f"best χ² = {chi2:.6g}"


@contextlib.contextmanager
def nlsq_progress(description: str, max_steps: int, *, enabled: bool) -> Iterator[object]:
    """Yields the `progress` argument for `fit_nlsq`: a callable `(step, chi2)` that drives one
    status line of LM steps with the best χ² reached so far and the time elapsed. No ETA: LM
    stops when it converges, usually long before `max_steps`, so the step budget says nothing
    about the time left. Not interactive: a log line every 5 s. Disabled: `False`. Either way the
    compiled programs hold no host callback (the steps are driven from Python)."""
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
                _LOG.info(f"{description}: step {step}, {_chi2_text(chi2)}, {now:.0f} s")

        yield best_so_far(log_step)
        _LOG.info(f"{description}: done in {time.perf_counter() - began:.1f} s")
        return
    tqdm = _tqdm()
    assert tqdm is not None
    bar = tqdm(
        total=None,
        desc=f"{description}: step 0, χ² = …",
        bar_format="{desc}  {elapsed}",
        file=sys.stderr,
        leave=False,
    )

    def show_step(step: int, chi2: float) -> None:
        bar.n = step
        bar.set_description_str(f"{description}: step {step}, {_chi2_text(chi2)}", refresh=True)

    try:
        yield best_so_far(show_step)
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
        self.first_round = (warmup, warmup + samples)
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
        more = _MORE_LINE.search(line)
        if more is not None:
            self._restart(line, 0, int(more.group(1)), "CMC more draws")
            return
        if _AGAIN_LINE.search(line) is not None:
            self._restart(line, *self.first_round, "CMC warmup")
            return
        chain = _CHAIN_LINE.search(line)
        if chain is not None:
            self._chain_line(line, chain)
            return
        match = _CMC_LINE.search(line)
        if match is None:
            if line.strip():
                self._write(line)
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
        _LOG.log(level, _as_log(line))

    def _restart(self, line: str, warmup: int, total: int, description: str) -> None:
        """A new round of sampling (more draws without warmup, or warmup and draws with fewer
        shards): the line is shown, and the bar starts again over the round's steps."""
        self.warmup, self.total = warmup, total
        if self.bar is None:
            _LOG.info(_as_log(line))
            return
        self._write(_as_log(line))
        self.bar.reset(total=total)
        self.bar.set_description(description)

    def _write(self, line: str) -> None:
        """Any other line, printed above the bar (never into it)."""
        if self.bar is None:
            self.target.write(line + "\n")
            return
        tqdm = _tqdm()
        assert tqdm is not None
        tqdm.write(line, file=self.target)

    def _chain_line(self, line: str, match: re.Match) -> None:
        """Chains run side by side: the bar covers all their steps, warmup and sampling."""
        done, total = int(match.group(1)), int(match.group(2))
        if self.bar is not None:
            self.bar.total = total
            self.bar.set_description("CMC chains")
            self.bar.update(max(min(done, total) - self.bar.n, 0))
            return
        level = logging.INFO if done == total else logging.DEBUG
        _LOG.log(level, _as_log(line))

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        if self.pending.strip():
            self._line(self.pending)
        if self.bar is not None:
            self.bar.close()


def _as_log(line: str) -> str:
    """A sampler line as the CLI logs it: "CMC …" for "[heterojax.fit_cmc] …"."""
    return line.replace("[heterojax.fit_cmc] ", "CMC ").rstrip()


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

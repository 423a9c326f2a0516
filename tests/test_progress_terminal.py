"""The progress displays as a user sees them: rendered on a pseudo-terminal, and as log lines
when stderr is not a terminal."""

import fcntl
import io
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap

import pytest


_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from heterojax._cli._progress import nlsq_progress, sampler_progress

    # Two starts report in turn (as the vmapped solver does), χ² = 0 before their first step.
    with nlsq_progress("NLSQ", 1000, enabled=True) as show:
        for step, chi2 in [(0, 0.0), (0, 0.0), (1, 5000.0), (1, 40.0), (2, 4800.0), (2, 35.0)]:
            show(step, chi2)
        print("NLSQ-DONE", file=sys.stderr, flush=True)

    with sampler_progress(warmup=10, samples=10, enabled=True):
        for chain in (1, 2):
            for step in (10, 20):
                done = 20 * (chain - 1) + step
                print(f"[heterojax.fit_cmc] chains: {done}/40 steps ({100 * done // 40:3d} %)"
                      f"  (chain {chain}: warmup 10/10; chain {3 - chain}: warmup 5/10)    1.0 s",
                      file=sys.stderr, flush=True)
            print(f"chain {chain} finished: 0 divergences", file=sys.stderr, flush=True)
    """
)


def render(script: str) -> str:
    """Runs `script` with stderr on a pseudo-terminal; returns what the terminal received."""
    main, child = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and tqdm trims its line to the width.
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child,
        env=os.environ,
    )
    os.close(child)
    received = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(main)
    assert process.wait(timeout=120) == 0, received.decode(errors="replace")
    return received.decode("utf-8", errors="replace")


def screens(received: str) -> list[str]:
    """Every state of the status line: the text between carriage returns and line feeds."""
    return [part for part in received.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


@pytest.fixture(scope="module")
def terminal() -> str:
    return render(_SCRIPT)


def test_nlsq_line_shows_the_best_chi2_so_far_and_no_eta(terminal):
    nlsq = terminal.split("NLSQ-DONE")[0]
    states = [s for s in screens(nlsq) if "step" in s]
    assert states, nlsq
    assert not any("χ² = 0 " in s or s.rstrip().endswith("χ² = 0") for s in states), states
    shown = [float(s.split("best χ² = ")[1].split()[0]) for s in states if "best χ²" in s]
    assert shown[-1] == 35.0 and "4800" not in nlsq, states  # the best start, not the last
    assert all(b <= a for a, b in zip(shown, shown[1:])), shown  # best so far: never rises
    assert not any("left" in s or "≤" in s or "<" in s for s in states), states  # no ETA


def test_cmc_bar_advances_and_chain_lines_stay_out_of_it(terminal):
    cmc = terminal.split("NLSQ-DONE")[1]
    percents = [int(s.split("%")[0].split()[-1]) for s in screens(cmc) if "CMC chains" in s]
    assert percents and max(percents) >= 75, screens(cmc)  # the bar moves through the chains
    assert any("<" in s for s in screens(cmc) if "CMC chains" in s)  # an ETA: totals are known
    for chain in (1, 2):
        line = f"chain {chain} finished: 0 divergences"
        # Printed above the bar on a line of its own: nothing of the bar on the same line.
        assert any(s.strip().endswith(line) and "CMC" not in s for s in screens(cmc)), cmc
    assert "[heterojax.fit_cmc]" not in cmc


def test_log_lines_when_not_on_a_terminal(caplog):
    from heterojax._cli._progress import _SamplerStream, nlsq_progress

    target = io.StringIO()
    with caplog.at_level(logging.DEBUG, logger="heterojax.cli"):
        stream = _SamplerStream(target, warmup=10, samples=10, interactive=False)
        stream.write("[heterojax.fit_cmc] chains: 40/40 steps (100 %)  1.0 s\n")
        stream.write("something else\n")
        stream.close()
        with nlsq_progress("NLSQ", 100, enabled=True) as show:
            assert callable(show)
            show(0, 0.0)
    assert target.getvalue() == "something else\n"  # no bar characters anywhere
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("CMC chains:") for m in messages), messages
    assert any("NLSQ: done" in m for m in messages)

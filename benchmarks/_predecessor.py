"""Run code under heterodyne 2.0.1, the package heterojax succeeds, for side-by-side benchmarks.

heterodyne 2.0.1 needs Python ≥ 3.12, so it lives in its own virtual environment, created on first
use under `~/.cache/heterojax-bench/heterodyne-2.0.1` (or the directory named by the environment
variable `HETEROJAX_PREDECESSOR_VENV`) from the first Python ≥ 3.12 found: `python3.12`,
`python3.13`, `python3.14` on PATH, then the versions installed by pyenv.

The API is small:

- `predecessor_python()` returns that environment's interpreter, creating it if needed, or raises
  `PredecessorUnavailable` with the reason.
- `run_in_predecessor(code, payload)` runs `code` once in a fresh interpreter there and returns
  the JSON-serialisable dict it leaves in `result`.
- `PredecessorSession` keeps one interpreter alive, so that setup (imports, compilation) happens
  once and timings can be interleaved with heterojax's in the same run.

Inside `code`, `payload` is the dict that was passed and `result` must be set to a dict.
Arrays too large for JSON travel as `.npz` files whose paths are in the payload.

Importing heterodyne appends `--xla_force_host_platform_device_count=4
--xla_disable_hlo_passes=constant_folding` to `XLA_FLAGS`; a snippet that wants heterojax's XLA
settings calls `restore_xla_flags()` (defined in its namespace) before its first JAX computation.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


PREDECESSOR = "heterodyne"
PREDECESSOR_VERSION = "2.0.1"
VENV_VARIABLE = "HETEROJAX_PREDECESSOR_VENV"
MINIMUM_PYTHON = (3, 12)


class PredecessorUnavailable(RuntimeError):
    """heterodyne 2.0.1 cannot be run here; the message says why."""


def predecessor_venv() -> Path:
    """Where the predecessor's virtual environment lives (created on demand)."""
    override = os.environ.get(VENV_VARIABLE)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "heterojax-bench" / f"{PREDECESSOR}-{PREDECESSOR_VERSION}"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _python_version(python: str | Path) -> tuple[int, int] | None:
    """The interpreter's (major, minor), or None if it does not run (e.g. an idle pyenv shim)."""
    try:
        completed = subprocess.run(
            [str(python), "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    major, minor = completed.stdout.split()
    return int(major), int(minor)


def _candidate_pythons() -> list[Path]:
    candidates = []
    for name in ("python3.12", "python3.13", "python3.14"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    versions = []
    for directory in (pyenv_root / "versions").glob("3.*"):
        match = re.fullmatch(r"3\.(\d+)\.(\d+)", directory.name)
        if match and (3, int(match.group(1))) >= MINIMUM_PYTHON:
            version = (int(match.group(1)), int(match.group(2)))
            versions.append((*version, directory / "bin" / "python"))
    candidates.extend(python for *_, python in sorted(versions))
    return candidates


def find_base_python() -> Path | None:
    """The first working Python ≥ 3.12 (PATH first, then pyenv versions), or None."""
    for python in _candidate_pythons():
        version = _python_version(python)
        if version is not None and version >= MINIMUM_PYTHON:
            return python
    return None


_VERSION_CHECK = f"import importlib.metadata as m; print(m.version({PREDECESSOR!r}))"


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    completed = subprocess.run(
        [str(python), "-c", _VERSION_CHECK], capture_output=True, text=True, timeout=120
    )
    return completed.stdout.strip() if completed.returncode == 0 else None


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def predecessor_python(*, create: bool = True) -> Path:
    """The interpreter of a virtual environment with heterodyne 2.0.1 installed.

    **Arguments:**

    - `create`: build the environment (`python -m venv` + `pip install heterodyne==2.0.1`) when it
        is missing or broken; otherwise only look.

    **Returns:** the path of the environment's `python`.

    **Raises:** `PredecessorUnavailable` when no Python ≥ 3.12 exists or the installation fails.
    """
    venv = predecessor_venv()
    python = _venv_python(venv)
    if _installed_version(python) == PREDECESSOR_VERSION:
        return python
    if not create:
        raise PredecessorUnavailable(
            f"{PREDECESSOR}=={PREDECESSOR_VERSION} is not installed in {venv}."
        )
    base = find_base_python()
    if base is None:
        raise PredecessorUnavailable(
            f"{PREDECESSOR} {PREDECESSOR_VERSION} needs Python >= 3.12; none found "
            "(looked for python3.12/3.13/3.14 on PATH and in pyenv versions)."
        )
    steps = [
        [str(base), "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", f"{PREDECESSOR}=={PREDECESSOR_VERSION}"],
    ]
    for step in steps:
        completed = subprocess.run(step, capture_output=True, text=True)
        if completed.returncode != 0:
            raise PredecessorUnavailable(
                f"`{' '.join(step)}` failed:\n{_tail(completed.stdout + completed.stderr)}"
            )
    installed = _installed_version(python)
    if installed != PREDECESSOR_VERSION:
        raise PredecessorUnavailable(
            f"installed {PREDECESSOR} {installed!r} in {venv}, expected {PREDECESSOR_VERSION}."
        )
    return python


# The worker that runs inside the predecessor's interpreter. Requests and replies are JSON lines
# on the original stdout/stdin; anything the code prints goes to stderr instead.
_WORKER = r"""
import json, os, sys, traceback
_XLA_FLAGS = os.environ.get("XLA_FLAGS")
def restore_xla_flags():
    if _XLA_FLAGS is None:
        os.environ.pop("XLA_FLAGS", None)
    else:
        os.environ["XLA_FLAGS"] = _XLA_FLAGS
_replies = sys.stdout
sys.stdout = sys.stderr
namespace = {"restore_xla_flags": restore_xla_flags, "__name__": "__predecessor__"}
for line in sys.stdin:
    request = json.loads(line)
    namespace["payload"] = request["payload"]
    namespace.pop("result", None)
    try:
        exec(compile(request["code"], "<predecessor>", "exec"), namespace)
        reply = {"result": namespace.get("result")}
        if not isinstance(reply["result"], dict):
            reply = {"error": "the code must set `result` to a dict"}
    except BaseException:
        reply = {"error": traceback.format_exc()}
    _replies.write(json.dumps(reply) + "\n")
    _replies.flush()
"""


class PredecessorSession:
    """A live interpreter with heterodyne 2.0.1, keeping its namespace between calls.

    Use as a context manager: `with PredecessorSession() as session: session.run(code, payload)`.
    The interpreter inherits this process's environment (so the same `XLA_FLAGS`, thread and
    affinity settings apply); its stderr is kept in a temporary file and quoted on errors.
    """

    def __init__(self, python: Path | None = None):
        """**Arguments:** `python`, the interpreter to use (default: `predecessor_python()`)."""
        self.python = predecessor_python() if python is None else python
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [str(self.python), "-u", "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def run(self, code: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Executes `code` with `payload` bound and returns the dict it assigns to `result`."""
        process = self._process
        if process.poll() is not None or process.stdin is None or process.stdout is None:
            raise PredecessorUnavailable(f"the predecessor worker has exited:\n{self._errors()}")
        process.stdin.write(json.dumps({"code": code, "payload": payload or {}}) + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise PredecessorUnavailable(f"the predecessor worker died:\n{self._errors()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"predecessor code failed:\n{reply['error']}")
        return reply["result"]

    def _errors(self) -> str:
        self._stderr.seek(0)
        return _tail(self._stderr.read(), 30)

    def close(self) -> None:
        """Stops the interpreter."""
        if self._process.poll() is None:
            if self._process.stdin is not None:
                self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stderr.close()

    def __enter__(self) -> "PredecessorSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_in_predecessor(code: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs `code` once in a fresh heterodyne 2.0.1 interpreter and returns its `result` dict.

    **Arguments:** `code`, Python source that reads `payload` and sets `result` (a JSON-ready
    dict); `payload`, a JSON-ready dict.

    **Raises:** `PredecessorUnavailable` if the environment cannot be made; `RuntimeError` if the
    code fails (with its traceback).
    """
    with PredecessorSession() as session:
        return session.run(code, payload)


if __name__ == "__main__":
    # `python benchmarks/_predecessor.py` creates (if needed) and reports the environment.
    try:
        info = run_in_predecessor(
            "import sys, heterodyne; result = {'python': sys.version.split()[0], "
            "'heterodyne': heterodyne.__version__}"
        )
    except PredecessorUnavailable as error:
        info = {"skipped": str(error)}
    print(json.dumps({"venv": str(predecessor_venv()), **info}))
    sys.exit(0)

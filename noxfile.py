"""Developer sessions: `nox -s tests`, `lint`, `typecheck`, `docs`, `bench`."""

import nox


nox.options.sessions = ["tests", "lint", "typecheck"]


@nox.session
def tests(session: nox.Session) -> None:
    """The default test run (slow tests excluded; pass `-- -m slow` for those)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", "heterojax", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "heterojax", "tests", "benchmarks", "examples")


@nox.session
def typecheck(session: nox.Session) -> None:
    """pyright in basic mode over the package."""
    session.install("-e", ".[test]", "pyright")
    session.run("pyright", "heterojax")


@nox.session
def docs(session: nox.Session) -> None:
    """Checks that every public name has a docstring (the API reference is the docstrings)."""
    session.install("-e", ".")
    session.run(
        "python",
        "-c",
        "import heterojax as hj; missing = [n for n in dir(hj) if not n.startswith('_') "
        "and callable(getattr(hj, n)) and not getattr(hj, n).__doc__]; "
        "assert not missing, missing; print('all public callables documented')",
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Runs every benchmark script; each prints one JSON object."""
    session.install("-e", ".[test]")
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)

"""Project tasks. ``./bootstrap test`` runs lint, typecheck and tests in the bootstrap's .venv.

Sessions run in the current environment (``--no-venv``) when called through ./bootstrap, so a
fresh machine installs everything once; called bare, nox builds its own venvs with uv.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests"]

PACKAGE = "discore_voice"


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev,test]")
    session.run("mypy", "--strict", "-p", PACKAGE)


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", "-W", "error", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The quick start's first command: the fastest meaningful end-to-end check we have."""
    session.install("-e", ".[test]")
    session.run("pytest", "-W", "error", "-m", "smoke", "-q", *session.posargs)

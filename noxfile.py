"""Project tasks. ``./bootstrap test`` runs lint, typecheck and tests in the bootstrap's .venv.

Sessions run in the current environment (``--no-venv``) when called through ./bootstrap, so a
fresh machine installs everything once; called bare, nox builds its own venvs with uv.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests"]

PACKAGE = "discore_voice"


def _install(session: nox.Session, *args: str) -> None:
    """Install into a nox-made venv; under ``--no-venv`` the bootstrap venv already has it."""
    if session.venv_backend != "none":
        session.install(*args)


@nox.session
def lint(session: nox.Session) -> None:
    _install(session, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    _install(session, "-e", ".[dev,test]")
    session.run("mypy", "--strict", "-p", PACKAGE)


@nox.session
def tests(session: nox.Session) -> None:
    _install(session, "-e", ".[test]")
    session.run("pytest", "-W", "error", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The quick start's first command: a bot plays to two DAVE members on the local Discord."""
    _install(session, "-e", ".")
    session.run("discore-voice", "demo", *session.posargs)

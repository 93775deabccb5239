"""Typed errors raised by the library; only ``bench.cli`` turns them into messages and exit codes."""

from __future__ import annotations


def one_line(text: str) -> str:
    """Escape line breaks and other control characters: a message quotes user input (a key,
    a file name) and must still print as exactly one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class BenchError(Exception):
    """Base of every error a user can cause; the CLI prints it as one line and exits 2."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class SuiteError(BenchError):
    """A suite file that cannot be read or does not validate.

    The message always starts with the file and the key path, e.g.
    ``suites/x.yaml: matrix.optimizer[1]: unknown optimizer 'adamx' (choose from: ...)``.
    """

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.message = message
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + message)


class ResultsError(BenchError):
    """A results file that cannot be read, is too large or does not match the schema."""


class OutputError(BenchError):
    """The output folder cannot be created or written."""


class UsageError(BenchError):
    """Arguments that make no sense together (nothing to compare, no case selected...)."""

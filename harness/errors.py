"""The errors a researcher sees as one line (`harness: error: ...`, exit status 2).

Every stage raises these for bad input, before any job is submitted; the command line turns
them into one line each (see harness.cli).
"""

from __future__ import annotations


class HarnessInputError(ValueError):
    """Bad input: one line per problem, naming the field, file or line."""


class ConfigError(HarnessInputError):
    """A bad config value, file or override; the message is one line naming it.

    Validation that collects several problems passes them all (`problems`); str() is then one
    line per problem.
    """

    def __init__(self, message: str = "", problems: list[str] | None = None):
        self.problems = list(problems) if problems else [message]
        super().__init__("\n".join(self.problems))


class DataError(HarnessInputError):
    """Bad or missing data; the message is one line naming the file (and line)."""

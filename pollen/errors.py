"""Errors a user can cause. The CLI prints their message (no traceback) and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '': a typo should cost one glance, not a doc search."""
    choices = list(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    close = close or sorted(c for c in choices if name and c.startswith(str(name)))[:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


class PollenError(Exception):
    """Base of every user-facing error; the message must say what to fix.

    The CLI prints the message as the last line; `details` (process logs, say) go above it.
    """

    exit_code = 2

    def __init__(self, *args: object, details: str | None = None) -> None:
        super().__init__(*args)
        self.details = details


class ConfigError(PollenError):
    """A run configuration value is missing, malformed or out of range."""


class UnknownNameError(ConfigError):
    """A registry lookup (model, dataset, strategy, codec stage, ...) failed."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(f"unknown {kind} {name!r}{did_you_mean(name, choices)}; "
                         f"choose one of: {', '.join(sorted(choices))}")


class DataError(PollenError):
    """A dataset cannot be loaded or cannot be split as asked."""


class ModelError(PollenError):
    """A model cannot be found or loaded."""


class PayloadError(PollenError):
    """An update received from the network failed validation; the update is dropped."""

    def __init__(self, message: str, *, client: str | int | None = None, field: str | None = None):
        self.client, self.field = client, field
        where = []
        if client is not None:
            where.append(f"client {client}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)


class DeploymentError(PollenError):
    """A server/client process could not be started or failed."""


class RoundError(PollenError):
    """A federated round aggregated no client update (see run.allow_empty_rounds)."""

"""The intake's errors, under the platform's root (`shared.errors`).

    SlmopsError
    └── IntakeError
        └── StreamUnavailable         TransientError: the command stream or the DLQ did not answer;
                                      the next sweep tries again

A device report that fails validation is not an error here: the kit's decoder rejects it before
the intake sees it, and dead-letters it with the reason.
"""

from __future__ import annotations

from shared import errors


class IntakeError(errors.SlmopsError):
    """Base of the intake's errors."""


class StreamUnavailable(IntakeError, errors.TransientError):
    """JetStream did not answer a sweep's request; nothing was lost, the next sweep retries."""

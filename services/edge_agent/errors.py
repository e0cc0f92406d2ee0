"""The edge agent's errors, each under its branch of the platform's root (`shared.errors`).

    SlmopsError
    └── AgentError
        ├── VerificationFailed   CallerError: the bytes are not what the registry signed; never retried
        ├── DownloadFailed       TransientError: the download did not complete after the bounded retries
        ├── DownloadRefused      CallerError: the registry refused a download URL (no such digest); not retried
        ├── LoadFailed           CallerError: onnxruntime cannot load the model, or the smoke input fails
        └── NotReady             TransientError: no model is active yet (inference asked too early)

An install that fails with any of these is reported as a `failed` status with the message as its
reason; the previous model keeps serving.
"""

from __future__ import annotations

from shared import errors


class AgentError(errors.SlmopsError):
    """Base of the agent's errors."""


class VerificationFailed(AgentError, errors.CallerError):
    """The artifact's sha256 or the registry's signature does not check out."""


class DownloadFailed(AgentError, errors.TransientError):
    """The bytes did not arrive in full within the bounded attempts."""


class DownloadRefused(AgentError, errors.CallerError):
    """The registry refused to hand out a URL for the digest: retrying the same digest fails the same way."""


class LoadFailed(AgentError, errors.CallerError):
    """The model does not load on this device, or fails its smoke input."""


class NotReady(AgentError, errors.TransientError):
    """No model is serving yet."""

"""The edge agent's errors.

AgentError
├── VerificationFailed   the bytes are not what the registry signed (digest or signature); never retried
├── DownloadFailed       the download did not complete after the bounded retries
├── LoadFailed           onnxruntime cannot load the model, or the smoke input fails on it
└── NotReady             no model is active yet (inference asked too early)
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of the agent's errors."""


class VerificationFailed(AgentError):
    pass


class DownloadFailed(AgentError):
    pass


class LoadFailed(AgentError):
    pass


class NotReady(AgentError):
    pass

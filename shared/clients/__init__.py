"""Typed clients: a service as its callers see it, methods that return models.

`rpc.call` is the one place a reply is read and an error code becomes an exception
(`shared.errors.error_for_code`); each service's client wraps its operations in methods.
"""

from shared.clients.registry import RegistryClient
from shared.clients.rpc import call, health

__all__ = ["RegistryClient", "call", "health"]

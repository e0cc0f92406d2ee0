"""Message contracts: the envelope and every service's commands, events and requests.

Importing this package registers every payload type with the envelope's catalogue, so `decode`
knows them all wherever it is called.
"""

from shared.messages import blueprint_api, common, device, optimizer, registry, rollout, telemetry
from shared.messages.envelope import Envelope, InvalidMessage, Message, decode, encode, message_types, wrap

__all__ = [
    "Envelope",
    "InvalidMessage",
    "Message",
    "blueprint_api",
    "common",
    "decode",
    "device",
    "encode",
    "message_types",
    "optimizer",
    "registry",
    "rollout",
    "telemetry",
    "wrap",
]

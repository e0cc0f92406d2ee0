"""Message contracts: the envelope and every service's commands, events and requests.

Importing this package registers every payload type with the envelope's catalogue, so `decode`
knows them all wherever it is called.
"""

from shared.messages import common, registry
from shared.messages.envelope import Envelope, InvalidMessage, Message, decode, encode, message_types, wrap

__all__ = [
    "Envelope",
    "InvalidMessage",
    "Message",
    "common",
    "decode",
    "encode",
    "message_types",
    "registry",
    "wrap",
]

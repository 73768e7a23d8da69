"""Decoders of WebSocket sub-protocols (RFC 6455 §1.9; IANA WebSocket Subprotocol
Name Registry, RFC 6455 §11.5).

A sub-protocol is negotiated per connection with ``Sec-WebSocket-Protocol``. Its
decoder reads each message and says what it is: the Kubernetes channel of a
``*.channel.k8s.io`` message, the type of a GraphQL, MQTT, STOMP, WAMP or Jupyter
message. One decoder instance serves one connection (both directions), so it may
keep state. Adding a sub-protocol is one module that registers its decoder here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..model import Finding, Message


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a sub-protocol decoder read in one message.

    ``channel``: a numbered stream inside the connection (Kubernetes: 0 stdin,
    1 stdout, 2 stderr, 3 error/status, 4 resize, 255 close-stream in v5);
    ``kind``: the message type (``"stdout"``, ``"subscribe"``, ``"PUBLISH"``, ...);
    ``text``: human-readable content for a transcript, at most a few KiB;
    ``findings``: protocol violations seen, as catalogue findings.
    """

    channel: int | None = None
    kind: str | None = None
    text: str | None = None
    findings: tuple[Finding, ...] = ()


class SubprotocolDecoder(Protocol):
    """One connection's decoder for one negotiated sub-protocol."""

    name: str

    def decode(self, msg: Message, payload: bytes) -> Decoded:
        """Decode ``msg`` whose reassembled (decompressed) payload is ``payload``.
        Never raises on traffic: malformed content is a finding or ``Decoded()``."""
        ...


_REGISTRY: dict[str, Callable[[str], SubprotocolDecoder]] = {}


def register(
    *names: str,
) -> Callable[[Callable[[str], SubprotocolDecoder]], Callable[[str], SubprotocolDecoder]]:
    """Class decorator: register a decoder factory for the sub-protocol tokens
    ``names`` (compared case-sensitively, as RFC 6455 §4.1 tokens are)."""

    def deco(factory: Callable[[str], SubprotocolDecoder]) -> Callable[[str], SubprotocolDecoder]:
        for n in names:
            _REGISTRY[n] = factory
        return factory

    return deco


def decoder_for(subprotocol: str | None) -> SubprotocolDecoder | None:
    """A new decoder for the negotiated ``subprotocol``, or None when there is none
    or it is not known."""
    if not subprotocol:
        return None
    factory = _REGISTRY.get(subprotocol)
    return factory(subprotocol) if factory is not None else None


def known() -> list[str]:
    """The sub-protocol tokens that have a decoder."""
    return sorted(_REGISTRY)


# The decoders register themselves on import (after the interface above exists).
from . import graphql, jupyter, k8s, mqtt, stomp, wamp  # noqa: E402, F401

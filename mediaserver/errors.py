"""The project's error base classes.

`PeerError` means the other side broke a protocol or sent bad data: close that one connection and carry
on. `UsageError` means we were called wrong (a bug or a bad setting). Messages name the value, the limit
and what to do, e.g. "chunk size 0 from 10.0.0.5 is invalid; must be 1..2147483647".
"""

from __future__ import annotations


class MediaServerError(Exception):
    """Base of every error the project raises on purpose."""


class PeerError(MediaServerError):
    """The peer sent something we cannot accept; the connection it came on should close."""


class UsageError(MediaServerError):
    """The project was called or configured wrong."""


class MediaError(PeerError, ValueError):
    """A media payload (FLV tag body, codec config, NAL units) is malformed."""


class Unavailable(MediaServerError):
    """A service a request needs (the recordings database, a bucket) cannot be reached now: the HTTP layers
    answer 503 with Retry-After, as the request may well succeed when it is asked again."""

    retry_after_s = 5
    public_message = "a service this request needs cannot be reached now"
    """What a viewer is told (the message itself, with hosts and database names, is for operators)."""

"""Errors for unusable input. Traffic never raises; files and arguments do."""


class WsanalyzeError(Exception):
    """Base class of the errors wsanalyze raises on purpose."""


class CaptureError(WsanalyzeError):
    """A capture file cannot be used at all: missing, unreadable, not a capture,
    or of a format that cannot be read. The message is one line naming the file
    and what to do."""

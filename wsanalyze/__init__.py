"""wsanalyze: WebSocket traffic through full proxies, from two packet captures.

>>> import wsanalyze
>>> a = wsanalyze.analyze("client.pcap", "server.pcap")   # doctest: +SKIP
>>> a.pairs, a.header_changes, a.message_matches, a.findings  # doctest: +SKIP
"""

from .api import Analysis, analyze
from .errors import CaptureError

__version__ = "0.1.0"
__all__ = ["Analysis", "CaptureError", "analyze", "__version__"]

"""wsanalyze: WebSocket traffic through full proxies, from two packet captures."""

__version__ = "0.1.0"

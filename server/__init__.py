"""Sandra: a realtime voice concierge served over WebRTC."""

__version__ = "0.1.0"

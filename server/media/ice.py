"""Where ICE looks for host candidates.

aioice (under aiortc) gathers host candidates from every interface and never offers
127.0.0.1. ``[webrtc] host_addresses`` replaces that list, e.g. ``["127.0.0.1"]`` so that
tests and benchmarks keep all media on loopback. aioice has no per-connection option for
this, so the module function ``aioice.ice.get_host_addresses`` is replaced for the whole
process (aioice 0.13 calls it in ``Connection.gather_candidates``).
"""

from __future__ import annotations

from collections.abc import Sequence

import aioice.ice

_ORIGINAL = aioice.ice.get_host_addresses


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates only on ``addresses``; an empty list restores aioice's default."""
    if not addresses:
        aioice.ice.get_host_addresses = _ORIGINAL
        return
    chosen = tuple(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses

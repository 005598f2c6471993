"""Where ICE looks for host candidates.

aioice (under aiortc) gathers host candidates from every interface and never offers
127.0.0.1. ``[webrtc] host_addresses`` replaces that list, e.g. ``["127.0.0.1"]`` so that
tests and benchmarks keep all media on loopback. aioice has no per-connection option for
this, so the module function ``aioice.ice.get_host_addresses`` is replaced for the whole
process (aioice 0.13 calls it in ``Connection.gather_candidates``). With loopback-only
host addresses, :func:`keep_loopback_candidates` also drops the offer's other candidates.
"""

from __future__ import annotations

import ipaddress
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


def loopback_only(addresses: Sequence[str]) -> bool:
    """Whether ``[webrtc] host_addresses`` keeps Sandra on loopback (tests, benchmarks)."""
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def keep_loopback_candidates(sdp: str) -> str:
    """The offer with only its loopback candidates (and relay candidates on loopback).

    A browser offers host candidates on every interface; a server restricted to loopback
    would still send connectivity checks to them (other addresses of this machine). With
    ``host_addresses`` all loopback, those lines are dropped before aiortc sees them, so
    no packet of a call is ever sent to any address but 127.0.0.0/8 or ::1.
    """
    kept = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 6 or not _is_loopback(fields[4]):
                continue
        kept.append(line)
    return "".join(kept)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # an mDNS name (….local) or garbage
        return False

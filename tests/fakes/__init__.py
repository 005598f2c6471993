"""Local stand-ins for the cloud vendors, speaking their real wire formats on 127.0.0.1."""

from .vendors import FakeVendors

__all__ = ["FakeVendors"]

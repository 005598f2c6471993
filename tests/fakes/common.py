"""What the fakes share: a change signal tests can wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Changes:
    """Everything a fake records calls :meth:`changed`; tests ``await until(predicate)``."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}") from None

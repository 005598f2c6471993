"""Who may call Sandra and how much: guest links, limits, TURN credentials, the HTTP edge.

- :mod:`.guest`   signed guest links (HS256 JWT): :func:`~.guest.verify`, :func:`~.guest.issue`
- :mod:`.limits`  token buckets: the :class:`~.limits.LimitStore` interface, its in-process
  :class:`~.limits.MemoryLimitStore`, and the per-call :class:`~.limits.MessageLimits`
- :mod:`.turn`    short-lived TURN REST credentials (coturn ``use-auth-secret``)
- :mod:`.calls`   the per-call guard the call core consults (auth, message limits, greeting)
- :mod:`.web`     aiohttp middlewares: CORS, security headers, client IP, access-log redaction
- :mod:`.links`   ``python -m server guest-link``: the link and its QR code
"""

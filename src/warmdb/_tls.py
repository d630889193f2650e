"""TLS for drivers that take an :class:`ssl.SSLContext` (asyncpg, the MySQL drivers).

:func:`ssl_context` turns warmdb's (libpq's) ``sslmode`` and CA file into the context libpq
would use, so ``require`` / ``verify-ca`` / ``verify-full`` mean the same for every driver:
``require`` encrypts without checking the certificate (unless a CA file is given, then it
checks the chain like ``verify-ca``), ``verify-ca`` checks the chain, ``verify-full`` also
the host name. ``"system"`` as the CA file means the operating system's store.
"""

from __future__ import annotations

import functools
import os
import ssl

__all__ = ["ssl_context"]


def ssl_context(sslmode: str, sslrootcert: str | None) -> ssl.SSLContext | None:
    """The context for *sslmode* and *sslrootcert*, or ``None`` for ``disable``.

    Contexts are built once per (mode, CA file and its modification time) and shared: loading
    a CA bundle costs milliseconds, too much for every connect.
    """
    if sslmode == "disable":
        return None
    mtime = None
    if sslrootcert is not None and sslrootcert != "system":
        mtime = os.stat(sslrootcert).st_mtime_ns
    return _cached_context(sslmode, sslrootcert, mtime)


@functools.lru_cache(maxsize=32)
def _cached_context(sslmode: str, sslrootcert: str | None, _mtime: int | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    verify = sslmode in ("verify-ca", "verify-full") or sslrootcert is not None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.check_hostname = sslmode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED
    if sslrootcert is None or sslrootcert == "system":
        context.load_default_certs()
    else:
        context.load_verify_locations(cafile=sslrootcert)
    return context

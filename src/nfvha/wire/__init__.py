"""The host–guest protocol, sans-IO: bytes and a clock reading in, bytes and events out.

Nothing here opens a socket, reads a clock or imports asyncio; the guest daemon and the
agent move the bytes and pass `now`. Importable on Python 3.8+ (the guest side runs in
arbitrary guest images), so no newer syntax at runtime.
"""

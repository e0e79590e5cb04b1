"""Check a Dask scheduler address before connecting: a malformed one used to cost a minute
(distributed's half-built ``Client`` times out while closing) and print a traceback."""
from __future__ import annotations

from typing import Any

# Schemes whose location is host:port.
HOST_PORT = ("tcp", "tls", "ws", "wss", "ucx")


def check_dask_address(address: Any) -> Any:
    """``address`` if it is a ``dask.distributed.Client`` or a well-formed scheduler address
    (``[scheme://]host:port``, port 1-65535), else ValueError saying what is wrong.

    Example:
        >>> check_dask_address("tcp://127.0.0.1:8786")
        'tcp://127.0.0.1:8786'
    """
    if not isinstance(address, str):
        return address  # a Client (the executor checks its type)
    from distributed.comm import parse_address, parse_host_port
    from distributed.comm.registry import backends

    example = "give a scheduler address such as tcp://host:8786"
    if not address.strip():
        raise ValueError(f"the Dask address is empty; {example}")
    try:
        scheme, location = parse_address(address)
    except ValueError as exc:
        raise ValueError(f"Dask address {address!r}: {exc}; {example}") from None
    if scheme not in backends:
        raise ValueError(f"Dask address {address!r}: unknown scheme {scheme!r} (known: "
                         f"{', '.join(sorted(backends))}); {example}")
    if scheme in HOST_PORT:
        try:
            _, port = parse_host_port(location)
        except ValueError as exc:
            raise ValueError(f"Dask address {address!r}: {exc}; {example}") from None
        if not 0 < int(port) < 65536:
            raise ValueError(f"Dask address {address!r}: port {port} is not in 1-65535")
    return address

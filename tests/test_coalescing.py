"""SSH packet writes joined per turn of the event loop (bastion/ssh/coalescing.py), on a real
loopback TCP connection: same bytes, same order, fewer writes; a close sends what is pending."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bastion.ssh.coalescing import _CoalescingTransport


class _Counting(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport


Peer = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _pair() -> tuple[asyncio.Transport, asyncio.StreamReader, Callable[[], Awaitable[None]]]:
    """A client transport and the server's reader of it; the last item closes everything."""
    accepted: asyncio.Future[Peer] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _protocol = await asyncio.get_running_loop().create_connection(
        _Counting, "127.0.0.1", port)
    assert isinstance(transport, asyncio.Transport)
    reader, writer = await accepted

    async def close() -> None:
        transport.close()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    return transport, reader, close


async def test_writes_in_one_callback_become_one_write_in_order() -> None:
    transport, reader, close = await _pair()
    writes: list[bytes] = []
    real_write = transport.write
    transport.write = lambda data: (writes.append(bytes(data)), real_write(data))  # type: ignore[method-assign]
    wrapped = _CoalescingTransport(transport, asyncio.get_running_loop())
    packets = [bytes([i]) * (100 + i) for i in range(16)]
    for packet in packets:
        wrapped.write(packet)
    assert writes == []  # not yet: at the end of this turn
    assert wrapped.get_write_buffer_size() == sum(map(len, packets))
    await asyncio.sleep(0)
    assert writes == [b"".join(packets)]
    received = await reader.readexactly(sum(map(len, packets)))
    assert received == b"".join(packets)
    await close()


async def test_a_close_sends_what_is_pending_first() -> None:
    transport, reader, close = await _pair()
    wrapped = _CoalescingTransport(transport, asyncio.get_running_loop())
    wrapped.write(b"disconnect: ")
    wrapped.write(b"goodbye")
    wrapped.close()
    assert await reader.read() == b"disconnect: goodbye"  # then EOF
    await close()


async def test_an_abort_after_a_turn_drops_nothing_written_before_it() -> None:
    transport, reader, close = await _pair()
    wrapped = _CoalescingTransport(transport, asyncio.get_running_loop())
    wrapped.write(b"last words")
    asyncio.get_running_loop().call_soon(wrapped.abort)  # as asyncssh's _force_close does
    assert await reader.read() == b"last words"
    await close()

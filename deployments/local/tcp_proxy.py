#!/usr/bin/env python3
"""A TCP proxy the fault suite controls, to cut the path to LocalStack without
stopping it (LocalStack keeps its queues in memory).

    tcp_proxy.py LISTEN_PORT TARGET_PORT CONTROL_FILE

While CONTROL_FILE exists the path is cut: open connections are closed and new ones
are accepted and closed at once. CONTROL_FILE.count holds "connections refused" so a
test can tell backoff from a hot loop.

If CONTROL_FILE holds the word `blackhole`, nothing is closed instead: bytes in either
direction are swallowed and every connection, open or new, stays silent, as with a
peer that vanished without a FIN or RST (a half-open connection). A connection that
saw the blackhole stays dead after the file is removed.
"""
import asyncio
import os
import sys

listen_port, target_port, control = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
refused = 0
open_writers = set()


def mode():
    """None (forward), "cut" or "blackhole"."""
    try:
        with open(control) as f:
            return "blackhole" if "blackhole" in f.read() else "cut"
    except FileNotFoundError:
        return None


def cut():
    return mode() == "cut"


def blackholed():
    return mode() == "blackhole"


def record():
    with open(control + ".count", "w") as f:
        f.write(f"{refused}\n")


async def pipe(reader, writer):
    try:
        while not cut():
            data = await reader.read(65536)
            if not data:
                break
            if blackholed():
                # Swallow everything from now on and never close: a silent peer.
                while await reader.read(65536):
                    pass
                await asyncio.Event().wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    global refused
    if cut():
        refused += 1
        record()
        client_writer.close()
        return
    if blackholed():
        await asyncio.Event().wait()
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    open_writers.update((client_writer, server_writer))
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
    open_writers.difference_update((client_writer, server_writer))


async def watch():
    # Cutting the path also drops connections that are open (long polls in progress).
    while True:
        await asyncio.sleep(0.1)
        if cut():
            for w in list(open_writers):
                w.close()
            open_writers.clear()


async def main():
    record()
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await asyncio.gather(server.serve_forever(), watch())


asyncio.run(main())

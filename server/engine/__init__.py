"""The shared engine: one process per model that serves fills to every language server (`engine: "shared"`).

    process.py    the engine process: sockets, clients, lock file, idle exit, the command line
    scheduler.py  its model thread: the queue, batching requests into shared passes, steps, cancellation
    protocol.py   the wire messages (msgspec) and the socket's place and name (one per model key)
    config.py     the engine's configuration, declared once for its command line and the client
    client.py     `RemoteFiller`: the `Filler` a language server uses to reach (or start) an engine

Nothing here is imported by a language server unless its `backend` is "shared".
"""

"""A Yjs-compatible realtime collaboration server.

Browsers running Yjs apps connect to ``/ws/{room}`` and speak the y-websocket protocol; the server
keeps one CRDT document per room in memory, makes every change durable and fans changes out.
The composition root is :func:`collab_server.app.create_app`.
"""

__version__ = "0.1.0"

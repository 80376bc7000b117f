"""The REST API (``/api/...``). Export routes live in ``exports.py``; the access layer (issue 9) adds
rooms and the error mapping, and mounts everything here."""

"""Why an export was refused or failed: ExportError subclasses, each with a stable ``code``.

ExportError (collab_server.errors)
├── InvalidExportRequest   unknown format, options out of range            (REST: 400, no job)
├── ExportNotFound         no such export job                              (REST: 404)
└── JobError               an attempt failed; the job records "code: detail"
    ├── RendererUnavailable  Chromium or the renderer bundle is missing    (permanent)
    ├── RoomGone             the room has no document (deleted)           (permanent)
    ├── InvalidBoard         a broken record, or undecodable stored bytes  (permanent)
    ├── BoardTooNew          written by a newer tldraw than the renderer's (permanent)
    ├── RenderTimeout        the render took longer than the job timeout   (retried)
    └── RenderFailed         the browser crashed or the page threw         (retried)
"""

from __future__ import annotations

from typing import ClassVar

from collab_server.errors import ExportError, RequestError


class InvalidExportRequest(ExportError, RequestError):
    """Also a RequestError: the REST API answers it like any other invalid request."""

    code = "invalid_export"
    status = 400


class ExportNotFound(ExportError, RequestError):
    code = "export_not_found"
    status = 404


class JobError(ExportError):
    """One attempt of a job failed. ``retryable``: another attempt (after a backoff) may succeed."""

    code: ClassVar[str] = "export_failed"
    retryable: ClassVar[bool] = False

    def record(self) -> str:
        """What the job row keeps: ``"code: detail"``."""
        return f"{self.code}: {self}"


class RendererUnavailable(JobError):
    code = "renderer_unavailable"


class RoomGone(JobError):
    code = "room_not_found"


class InvalidBoard(JobError):
    code = "invalid_board"


class BoardTooNew(JobError):
    code = "board_too_new"


class RenderTimeout(JobError):
    code = "render_timeout"
    retryable = True


class RenderFailed(JobError):
    code = "render_failed"
    retryable = True


def split_error(recorded: str | None) -> dict[str, str] | None:
    """A job row's ``"code: detail"`` as ``{"code", "detail"}`` for the REST API."""
    if recorded is None:
        return None
    code, _, detail = recorded.partition(": ")
    return {"code": code, "detail": detail}

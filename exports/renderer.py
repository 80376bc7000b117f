"""The Renderer seam: a Board in, an SVG / PNG / PDF file out. JSON never goes through a renderer.

The real one is ``exports.browser.BrowserRenderer`` (tldraw in headless Chromium); tests use fakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from exports.options import ExportFormat, ExportOptions
from exports.tldr import Board

WEB_DIR = Path(__file__).resolve().parent / "renderer" / "web"
BUNDLE_DIR = WEB_DIR / "dist"
INSTALL_HINT = "run scripts/build-renderer (installs Chromium, fonts and Node with apt-get, then builds the page)"


@dataclass(frozen=True, slots=True)
class Rendered:
    """One export file. ``details`` goes into the job's result (e.g. ``{"pdf": "vector"}``)."""

    data: bytes
    details: dict[str, Any] = field(default_factory=dict)


class Renderer(Protocol):
    """Renders boards. Errors are exports.errors.JobError subclasses (RendererUnavailable, InvalidBoard,
    BoardTooNew, RenderTimeout, RenderFailed)."""

    async def render(self, board: Board, fmt: ExportFormat, options: ExportOptions) -> Rendered: ...

    async def close(self) -> None: ...

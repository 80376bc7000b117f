"""Export formats and options, validated once when a job is requested (a bad request never becomes a job)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from exports.errors import InvalidExportRequest


class ExportFormat(StrEnum):
    JSON = "json"
    SVG = "svg"
    PNG = "png"
    PDF = "pdf"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]

    @property
    def extension(self) -> str:
        return "tldr" if self is ExportFormat.JSON else self.value


_CONTENT_TYPES = {
    ExportFormat.JSON: "application/vnd.tldraw+json",
    ExportFormat.SVG: "image/svg+xml",
    ExportFormat.PNG: "image/png",
    ExportFormat.PDF: "application/pdf",
}

MAX_PNG_PIXELS = 16_777_216
"""Largest PNG (4096 x 4096 worth of pixels) the renderer makes: past it the pixel ratio is lowered to fit
(the job result says which ratio was used). Chromium's canvas stops near 268 megapixels, and encoding
time grows with the pixels: a 2,000-shape board at ratio 2 would be about 580 megapixels."""


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """What a caller may choose. ``page``: a page id (``page:…``) or name; None is the board's first page
    (tldraw keeps the *current* page per browser tab, not in the shared document, so a server export
    takes the first page in the board's page order). ``pdf_pages``: ``all`` makes one PDF page per tldraw
    page; ``page`` only the chosen page."""

    page: str | None = None
    background: bool = True
    scale: float = 1.0
    pixel_ratio: float = 2.0
    padding: int = 32
    dark_mode: bool = False
    pdf_pages: str = "all"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_BOUNDS: dict[str, tuple[float, float]] = {"scale": (0.1, 8.0), "pixel_ratio": (0.5, 4.0), "padding": (0, 512)}


def parse_format(raw: object) -> ExportFormat:
    try:
        return ExportFormat(str(raw))
    except ValueError:
        raise InvalidExportRequest(
            f"format must be one of {', '.join(f.value for f in ExportFormat)}, not {raw!r}"
        ) from None


def parse_options(raw: object) -> ExportOptions:
    """ExportOptions from a request body's ``options`` (None or an object); InvalidExportRequest names
    the first bad field."""
    if raw is None:
        return ExportOptions()
    if not isinstance(raw, dict):
        raise InvalidExportRequest("options must be an object")
    known = set(ExportOptions.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidExportRequest(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name in ("background", "dark_mode"):
        if name in raw:
            if not isinstance(raw[name], bool):
                raise InvalidExportRequest(f"options.{name} must be true or false")
            values[name] = raw[name]
    for name, (low, high) in _BOUNDS.items():
        if name in raw:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidExportRequest(f"options.{name} must be a number")
            if not low <= value <= high:
                raise InvalidExportRequest(f"options.{name} must be between {low:g} and {high:g}, not {value!r}")
            values[name] = int(value) if name == "padding" else float(value)
    if "page" in raw and raw["page"] is not None:
        if not isinstance(raw["page"], str) or not 0 < len(raw["page"]) <= 200:
            raise InvalidExportRequest("options.page must be a page id or name (1-200 characters)")
        values["page"] = raw["page"]
    if "pdf_pages" in raw:
        if raw["pdf_pages"] not in ("all", "page"):
            raise InvalidExportRequest("options.pdf_pages must be 'all' (one PDF page per board page) or 'page'")
        values["pdf_pages"] = raw["pdf_pages"]
    return ExportOptions(**values)

"""Exports rendered by real tldraw in Chromium, end to end: a board drawn in the example app (real tldraw,
synced through the server), then exported in every format by the server's in-process worker.

One warm Chromium for the module (Playwright on the system browser); the server renders with its own.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from exports.browser import CHROMIUM_FLAGS
from exports.renderer import BUNDLE_DIR
from exports.static_server import StaticServer
from tests.support.eventually import eventually
from tests.support.example_app import ExampleApp
from tests.support.servers import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

RED = {"id": "shape:red", "x": 0, "y": 0, "color": "red", "text": "Red box"}
BLUE = {"id": "shape:blue", "x": 400, "y": 0, "color": "blue", "text": "Blue box"}
PADDING = 32


@pytest.fixture(scope="module")
def export_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("exports")
    process = ServerProcess(
        env={
            "COLLAB_DATABASE_URL": f"sqlite:///{directory}/collab.sqlite3",
            "COLLAB_BLOB_URL": f"file://{directory}/blobs",
            "COLLAB_BLOB_SIGNING_KEY": secrets.token_urlsafe(16),
            "COLLAB_EXPORT_POLL_INTERVAL": "0.5",
            # normal priority: this test is about what is rendered (test_export_renderer checks the idle
            # class); at idle priority a render on a machine busy with other work can wait for minutes
            "COLLAB_EXPORT_NICE": "0",
        },
        log_path=directory / "server.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def app(export_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleApp]:
    running = ExampleApp(export_server.http, tmp_path_factory.mktemp("app") / "app.log").start()
    yield running
    running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def board(browser: Any, app: ExampleApp, export_server: ServerProcess) -> AsyncIterator[dict[str, Any]]:
    """A board drawn in the example app: a rectangle dragged with the mouse, two coloured labelled boxes
    and a note through the editor; returns the room and the records the app's editor holds."""
    room = f"exports-{secrets.token_hex(4)}"
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(f"{app.url}/?room={room}&server={export_server.http}&name=Tester")
    await page.wait_for_function("window.editor !== undefined && window.editor.getCurrentPage() !== undefined")
    # a real drag with the rectangle tool, where the blue box will not cover it
    await page.keyboard.press("r")
    await page.mouse.move(300, 500)
    await page.mouse.down()
    await page.mouse.move(420, 600, steps=8)
    await page.mouse.up()
    await page.evaluate(
        """([red, blue]) => {
            const label = (text) => ({
                type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text }] }] })
            const shapes = [red, blue].map((s) => ({ id: s.id, type: 'geo', x: s.x, y: s.y,
                props: { geo: 'rectangle', w: 200, h: 120, color: s.color, fill: 'fill', richText: label(s.text) } }))
            shapes.push({ id: 'shape:note', type: 'note', x: 0, y: 300, props: { richText: label('A note') } })
            window.editor.createShapes(shapes)
        }""",
        [RED, BLUE],
    )
    records = await page.evaluate(
        "() => window.editor.store.allRecords()"
        ".filter((r) => ['document', 'page', 'shape', 'binding'].includes(r.typeName))"
    )
    assert sum(r["typeName"] == "shape" for r in records) == 4
    yield {"room": room, "records": records, "page": page}
    await page.close()


async def _export(server: ServerProcess, room: str, fmt: str, options: dict[str, Any] | None = None) -> bytes:
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        body: dict[str, Any] = {"format": fmt, **({"options": options} if options else {})}
        created = await http.post(f"/api/rooms/{room}/exports", json=body)
        assert created.status_code == 202, created.text

        async def finished() -> dict[str, Any]:
            status: dict[str, Any] = (await http.get(f"/api/exports/{created.json()['id']}")).json()
            assert status["status"] in ("completed", "failed"), status
            return status

        status = await eventually(finished, timeout=90, interval=0.2)
        assert status["status"] == "completed", status["error"]
        download = await http.get(status["url"])
        assert download.status_code == 200
        assert download.headers["content-type"].startswith(
            {
                "json": "application/vnd.tldraw+json",
                "svg": "image/svg+xml",
                "png": "image/png",
                "pdf": "application/pdf",
            }[fmt]
        )
        return download.content


async def _stored(server: ServerProcess, room: str, expected: int) -> dict[str, Any]:
    # the app's edits reach the store within the group-commit window: export until all shapes are there
    async def complete() -> dict[str, Any]:
        tldr: dict[str, Any] = json.loads(await _export(server, room, "json"))
        assert sum(r["typeName"] == "shape" for r in tldr["records"]) == expected
        return tldr

    return await eventually(complete, timeout=30)


def _pixel(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = cast(tuple[int, int, int], image.getpixel((x, y)))
    return r, g, b


def _reddish(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > g + 60 and r > b + 60


def _bluish(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return b > r + 60 and b > g + 20


async def test_the_tldr_export_loads_back_into_tldraw_with_the_same_records(
    board: dict[str, Any], export_server: ServerProcess, browser: Any
) -> None:
    tldr = await _stored(export_server, board["room"], 4)
    assert tldr["tldrawFileFormatVersion"] == 1 and tldr["schema"]["schemaVersion"] == 2
    server = StaticServer(BUNDLE_DIR)
    page = await browser.new_page()
    try:
        await page.goto(server.origin + "/index.html")
        await page.wait_for_function("typeof window.collabParseTldr === 'function'")
        loaded = await page.evaluate("(json) => window.collabParseTldr(json)", json.dumps(tldr))
    finally:
        await page.close()
        server.close()

    def by_id(records: list[dict[str, Any]]) -> dict[str, Any]:
        return {r["id"]: r for r in records if r["typeName"] in ("shape", "page", "document", "binding")}

    assert by_id(loaded) == by_id(board["records"])


async def test_svg_holds_the_shapes_text(board: dict[str, Any], export_server: ServerProcess) -> None:
    await _stored(export_server, board["room"], 4)
    svg = await _export(export_server, board["room"], "svg")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(" ".join(element.itertext()) for element in root.iter())
    for label in ("Red box", "Blue box", "A note"):
        assert label in text


async def test_png_pixels_at_a_shape_are_its_colour(board: dict[str, Any], export_server: ServerProcess) -> None:
    await _stored(export_server, board["room"], 4)
    png = await _export(export_server, board["room"], "png", {"pixel_ratio": 1, "padding": PADDING})
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGB")
    # page (x, y) is at pixel (x - min_x + padding): the red box's top-left corner is the board's top-left
    assert _reddish(_pixel(image, PADDING + 30, PADDING + 20))
    assert _bluish(_pixel(image, PADDING + int(BLUE["x"]) + 30, PADDING + 20))  # type: ignore[call-overload]
    assert not _reddish(_pixel(image, PADDING + 300, PADDING + 20))  # between the boxes: background


async def test_pdf_opens_and_shows_the_shapes(
    board: dict[str, Any], export_server: ServerProcess, tmp_path: Path
) -> None:
    await _stored(export_server, board["room"], 4)
    pdf = await _export(export_server, board["room"], "pdf")
    assert pdf.startswith(b"%PDF-")
    (tmp_path / "board.pdf").write_bytes(pdf)
    await asyncio.to_thread(
        subprocess.run,
        ["pdftoppm", "-png", "-r", "40", str(tmp_path / "board.pdf"), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    pages = await asyncio.to_thread(lambda: sorted(tmp_path.glob("page*.png")))
    assert len(pages) == 1
    with Image.open(pages[0]) as opened:
        image = opened.convert("RGB")
    pixels = cast(list[tuple[int, int, int]], list(image.get_flattened_data()))
    assert sum(map(_reddish, pixels)) > 100 and sum(map(_bluish, pixels)) > 100


async def test_the_example_apps_export_menu_downloads_a_png(board: dict[str, Any], tmp_path: Path) -> None:
    page = board["page"]
    async with page.expect_download(timeout=90_000) as started:
        await page.click("button[data-export=png]")
    download = await started.value
    assert "/api/blobs/" in download.url
    await download.save_as(tmp_path / "menu.png")
    assert (tmp_path / "menu.png").read_bytes().startswith(b"\x89PNG\r\n")
    assert await page.inner_text("[data-export-status]") == "png: ready"


async def test_the_example_app_shows_other_peoples_cursors(
    board: dict[str, Any], browser: Any, app: ExampleApp, export_server: ServerProcess
) -> None:
    other = await browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        await other.goto(f"{app.url}/?room={board['room']}&server={export_server.http}&name=Other")
        await other.wait_for_function("window.editor !== undefined")
        page = board["page"]

        async def cursor_seen() -> None:
            await page.mouse.move(640, 420)
            await page.mouse.move(650, 430)
            names = await other.evaluate(
                "() => window.editor.store.allRecords()"
                ".filter((r) => r.typeName === 'instance_presence').map((r) => r.userName)"
            )
            assert "Tester" in names

        await eventually(cursor_seen, timeout=20, interval=0.2)
    finally:
        await other.close()


async def test_export_metrics_are_exposed(board: dict[str, Any], export_server: ServerProcess) -> None:
    await _stored(export_server, board["room"], 4)
    await _export(export_server, board["room"], "svg")
    assert export_server.metric('collab_export_jobs_total{status="requested"}') >= 2
    assert export_server.metric('collab_export_jobs_total{status="completed"}') >= 1
    assert export_server.metric("collab_export_queue_depth") >= 0
    assert export_server.metric("collab_export_browser_restarts_total") == 0
    assert export_server.metric('collab_export_render_seconds_count{format="svg"}') >= 1

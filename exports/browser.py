"""BrowserRenderer: tldraw's own exporter in headless Chromium, driven by Playwright.

- One warm browser per worker (started on the first render), one browser context holding the page cache,
  and warm pages: a page with the renderer loaded and the tldraw editor mounted renders a job, is reset,
  and renders the next one. Booting tldraw in a new page costs about as much CPU as a 200-shape export
  (and a new page runs tldraw's code cold, unoptimised by V8): reusing the page takes both off every job.
- Why a reused page is safe for isolation: a job's board reaches the page only as the store's records
  and leaves nothing behind once ``window.collabReset`` has run after it: the store is cleared whole (every
  record, the session's too) and rebuilt empty by tldraw, the undo history is dropped, the camera reset;
  the reset reports the shapes, bindings and assets left, and a page that does not report 0 is closed.
  A page whose job failed or timed out (it may be half-way through anything) is closed, never reused.
  Pages reach nothing but the loopback bundle server (below), so no page holds another room's data
  behind a URL either; what tldraw caches across jobs is code, fonts and text measurements.
- The browser is restarted after ``restart_after`` jobs (Chromium's memory creeps up over many jobs) and
  after a crash or a timed-out job (a page stuck in a long task can leave the renderer process wedged).
- Chromium is the system one (``executable_path``); Playwright never downloads a browser. Its background
  networking is turned off, and every host but the loopback bundle server is unresolvable, so a board
  that names an outside image cannot make the renderer reach out.
- Chromium runs at a lower CPU priority (nice ``niceness``, exports.priority), with one raster thread and
  one renderer process: beside the server's event loop in the embedded default, rendering takes only the
  CPU the realtime path leaves, one core at most.
- PDF: the page exports each tldraw page as SVG and Chromium prints them (vector); a page with more than
  ``raster_above`` shapes is exported as PNG and printed as an image (raster), which is much faster for very
  large boards. The job result says which (``{"pdf": "vector" | "raster"}``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from collab_server import metrics
from exports.errors import BoardTooNew, InvalidBoard, JobError, RendererUnavailable, RenderFailed, RenderTimeout
from exports.options import MAX_PNG_PIXELS, ExportFormat, ExportOptions
from exports.priority import lower_chromium_priority
from exports.renderer import BUNDLE_DIR, INSTALL_HINT, Rendered
from exports.static_server import StaticServer
from exports.tldr import Board

logger = logging.getLogger(__name__)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # yield to the realtime path beside it: one raster thread (Chromium starts one per core, and
    # rasterising a large board would otherwise take every core at once)
    "--num-raster-threads=1",
    # only the loopback bundle server resolves: a board's remote image URL fails fast instead of hanging
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
_PAGE_ERRORS: dict[str, type[JobError]] = {
    "board_too_new": BoardTooNew,
    "invalid_board": InvalidBoard,
    "render_failed": RenderFailed,
}


class BrowserRenderer:
    """Renderer on Chromium (see the module docstring). Safe for concurrent renders (pages share a browser)."""

    def __init__(
        self,
        *,
        executable: str = "/usr/bin/chromium",
        bundle_dir: Path = BUNDLE_DIR,
        license_key: str = "",
        timeout: float = 60.0,
        restart_after: int = 100,
        raster_above: int = 1500,
        niceness: int = 10,
        pages: int = 1,
    ) -> None:
        self._executable = executable
        self._bundle_dir = bundle_dir
        self._license_key = license_key
        self._timeout = timeout
        self._restart_after = restart_after
        self._raster_above = raster_above
        self._niceness = niceness
        # one renderer process per job rendered at once (the worker's concurrency): its pages share it
        self._flags = [*CHROMIUM_FLAGS, f"--renderer-process-limit={max(1, pages)}"]
        self._lock = asyncio.Lock()
        self._playwright: Any = None
        self._browser: Any = None
        self._context: Any = None
        self._server: StaticServer | None = None
        self._jobs_on_browser = 0
        self._active = 0
        self._spare: asyncio.Task[Any] | None = None
        self._warm_pages: list[Any] = []  # reset, mounted, waiting for a job
        self._resets: set[asyncio.Task[None]] = set()

    def check(self) -> None:
        """RendererUnavailable naming the install command when Chromium or the bundle is missing."""
        if not Path(self._executable).is_file():
            raise RendererUnavailable(f"Chromium is not installed at {self._executable}; {INSTALL_HINT}")
        if not (self._bundle_dir / "render.js").is_file():
            raise RendererUnavailable(f"the renderer page is not built ({self._bundle_dir}); {INSTALL_HINT}")

    async def _ensure_browser(self) -> Any:
        async with self._lock:
            if self._browser is not None and not self._browser.is_connected():
                logger.warning("chromium disconnected; restarting it")
                await self._stop_browser(restart=True)
            if self._browser is not None and self._jobs_on_browser >= self._restart_after and self._active == 0:
                await self._stop_browser(restart=True)
            if self._browser is None:
                await self._start_browser()
            self._jobs_on_browser += 1
            return self._context

    async def _start_browser(self) -> None:
        self.check()
        try:
            from playwright.async_api import async_playwright
        except ImportError as exc:  # pragma: no cover - playwright is a dependency
            raise RendererUnavailable(f"the playwright package is missing ({exc}); pip install playwright") from exc
        if self._server is None:
            self._server = StaticServer(self._bundle_dir)
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=self._executable, args=self._flags, headless=True
            )
        except Exception as exc:
            raise RendererUnavailable(f"Chromium at {self._executable} did not start ({exc}); {INSTALL_HINT}") from exc
        await self._deprioritise()
        self._context = await self._browser.new_context(viewport={"width": 1280, "height": 800})
        # the key is handed to the page before its script runs; it never appears in a URL or a log
        await self._context.add_init_script(
            script=f"window.collabConfig = {{ licenseKey: {_js_string(self._license_key)} }}"
        )
        self._jobs_on_browser = 0

    async def _open_page(self, context: Any) -> Any:
        """A new page with the renderer loaded and its editor mounted (``window.collabReady``)."""
        assert self._server is not None
        page = await context.new_page()
        try:
            await self._deprioritise()  # the page's renderer process is new (forked at the browser's nice)
            # bounded by the job's timeout, not Playwright's 30 s: at idle priority on a busy machine a page
            # may take longer to boot, and the job's deadline is the one that counts
            limit = self._timeout * 1000
            await page.goto(self._server.origin + "/index.html", wait_until="load", timeout=limit)
            await page.wait_for_function("window.collabReady === true", timeout=limit)
        except BaseException:
            with contextlib.suppress(Exception):
                await page.close()
            raise
        return page

    async def _deprioritise(self) -> None:
        if self._niceness > 0:
            await asyncio.to_thread(lower_chromium_priority, self._niceness)

    async def _take_page(self, context: Any) -> Any:
        """A warm page of this browser (waiting for a reset in progress), else the one loaded in reserve,
        else a new one."""
        if not self._warm_pages and self._resets:
            await asyncio.wait(set(self._resets))
        while self._warm_pages:
            page = self._warm_pages.pop()
            if page.context == context and not page.is_closed():
                return page
            await _close_quietly(page)
        spare, self._spare = self._spare, None
        if spare is not None:
            try:
                page = await spare
                if page.context == context and not page.is_closed():
                    return page
                await _close_quietly(page)
            except Exception:  # a reserve page that failed to load: open a new one
                pass
        return await self._open_page(context)

    def _reserve_page(self) -> None:
        # Load a page while the worker is idle, so a job starts at a mounted editor.
        if self._spare is None and not self._warm_pages and not self._resets and self._context is not None:
            self._spare = asyncio.create_task(self._open_page(self._context), name="renderer-spare-page")

    def _give_back(self, page: Any) -> None:
        """Reset a page whose job succeeded, off the job's path; it is reused once the reset proved clean."""
        task = asyncio.create_task(self._reset(page, self._context), name="renderer-page-reset")
        self._resets.add(task)
        task.add_done_callback(self._resets.discard)

    async def _reset(self, page: Any, context: Any) -> None:
        try:
            async with asyncio.timeout(10):
                left = await page.evaluate("() => window.collabReset()")
        except Exception as exc:
            logger.warning("renderer page reset failed (%s); closing it", exc)
            left = None
        if left == 0 and context is self._context and context is not None and not page.is_closed():
            # Chromium sets the nice value of the threads it starts itself (it may, as root): lower the
            # ones of this job again. In the idle class (niceness 19, the default) that is moot: the class
            # is inherited by every new thread and Chromium never changes it.
            if self._niceness < 19:
                with contextlib.suppress(Exception):
                    await self._deprioritise()
            self._warm_pages.append(page)
            return
        if left not in (0, None):
            logger.warning("renderer page kept %s records after its reset; closing it", left)
        await _close_quietly(page)
        self._reserve_page()

    async def warm(self) -> None:
        """Start the browser and have a page ready (benchmarks measure a warm worker)."""
        await self._ensure_browser()
        self._jobs_on_browser -= 1
        if self._resets:
            await asyncio.wait(set(self._resets))
        self._reserve_page()
        if self._spare is not None:
            await asyncio.wait({self._spare})

    async def _stop_browser(self, *, restart: bool) -> None:
        spare, self._spare = self._spare, None
        pending = [task for task in (spare, *self._resets) if task is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._warm_pages.clear()  # closed with the browser
        browser, self._browser, self._context = self._browser, None, None
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.close()
            if restart:
                metrics.EXPORT_BROWSER_RESTARTS.inc()

    async def render(self, board: Board, fmt: ExportFormat, options: ExportOptions) -> Rendered:
        if not board.is_tldraw:
            raise InvalidBoard(
                f"room {board.room!r} is not a tldraw board (no tl_{board.room} records); "
                "only JSON exports are possible"
            )
        context = await self._ensure_browser()
        self._active += 1
        page, succeeded = None, False
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                page = await self._take_page(context)
                request = {
                    "board": {"records": board.records, "schema": board.schema},
                    "format": fmt.value,
                    "options": options.to_dict(),
                    "rasterAbove": self._raster_above,
                    "maxPixels": MAX_PNG_PIXELS,
                }
                loaded = time.perf_counter()
                result = await page.evaluate("(request) => window.collabRender(request)", json.dumps(request))
                result["timings"]["page_ms"] = round((loaded - started) * 1000)
                printing = time.perf_counter()
                rendered = await self._file(context, fmt, result)
                if fmt is ExportFormat.PDF:
                    rendered.details["timings"]["print_ms"] = round((time.perf_counter() - printing) * 1000)
            succeeded = True
        except TimeoutError:
            await self._stop_browser(restart=True)
            raise RenderTimeout(f"rendering took longer than {self._timeout:g} s") from None
        except JobError:
            raise
        except Exception as exc:
            raise _page_error(exc) from exc
        finally:
            self._active -= 1
            if page is not None and succeeded and self._browser is not None:
                self._give_back(page)  # done: reset it for the next job
            elif page is not None:
                await _close_quietly(page)  # failed or abandoned half-way: never reused
            if self._browser is not None:
                self._reserve_page()
        metrics.EXPORT_RENDER_SECONDS.labels(fmt.value).observe(time.perf_counter() - started)
        return rendered

    async def run_page(self, script: str, arg: Any = None) -> Any:
        """Evaluate ``script`` (a function of ``arg``) in a fresh renderer page; for tests and benchmarks
        (``window.collabSampleBoard(n)`` draws a board with tldraw and returns its records)."""
        context = await self._ensure_browser()
        page = await self._open_page(context)
        try:
            return await page.evaluate(script, arg)
        finally:
            await page.close()

    async def _file(self, context: Any, fmt: ExportFormat, result: dict[str, Any]) -> Rendered:
        pages: list[dict[str, Any]] = result["pages"]
        details: dict[str, Any] = {"shapes": result["shapes"], "pages": len(pages), "timings": result["timings"]}
        if fmt is ExportFormat.SVG:
            return Rendered(pages[0]["data"].encode(), details | _size(pages[0]))
        if fmt is ExportFormat.PNG:
            return Rendered(
                base64.b64decode(pages[0]["data"]),
                details | _size(pages[0]) | {"pixel_ratio": round(pages[0]["pixelRatio"], 3)},
            )
        details["pdf"] = "raster" if any(p["kind"] == "png" for p in pages) else "vector"
        return Rendered(await _print_pdf(context, pages), details)

    async def close(self) -> None:
        await self._stop_browser(restart=False)
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                await self._playwright.stop()
            self._playwright = None
        if self._server is not None:
            self._server.close()
            self._server = None


async def _print_pdf(context: Any, pages: list[dict[str, Any]]) -> bytes:
    # One PDF page per exported tldraw page, all of the largest page's size, each image centred on it.
    width = max(p["width"] for p in pages)
    height = max(p["height"] for p in pages)
    body = "".join(f"<section>{_pdf_image(p)}</section>" for p in pages)
    document = (
        f"<!doctype html><html><head><meta charset='utf-8'><style>"
        f"@page {{ size: {width}px {height}px; margin: 0 }} html, body {{ margin: 0 }}"
        f"section {{ width: {width}px; height: {height}px; display: flex; align-items: center;"
        f" justify-content: center; break-after: page; overflow: hidden }}"
        f"section:last-child {{ break-after: auto }} section > * {{ max-width: 100%; max-height: 100% }}"
        f"</style></head><body>{body}</body></html>"
    )
    page = await context.new_page()
    try:
        await page.set_content(document, wait_until="load")
        await page.evaluate("document.fonts.ready.then(() => true)")  # the SVGs' embedded fonts
        pdf: bytes = await page.pdf(
            width=f"{width}px", height=f"{height}px", print_background=True, prefer_css_page_size=True
        )
        return pdf
    finally:
        await page.close()


_SVG_FILTER = re.compile(r'\sfilter="url\(#[^)"]*\)"')


def _pdf_image(page: dict[str, Any]) -> str:
    if page["kind"] == "svg":
        # Chromium's PDF backend rasterises every SVG filter region at print resolution: a board with a few
        # dozen notes (each has a drop-shadow filter) prints 30x slower. Vector PDFs leave the shadows out.
        return _SVG_FILTER.sub("", str(page["data"]))
    return f'<img width="{page["width"]}" height="{page["height"]}" src="data:image/png;base64,{page["data"]}">'


async def _close_quietly(page: Any) -> None:
    with contextlib.suppress(Exception):
        await page.close()


def _size(page: dict[str, Any]) -> dict[str, Any]:
    return {"width": page["width"], "height": page["height"]}


def _js_string(value: str) -> str:
    return json.dumps(value)


def _page_error(exc: Exception) -> JobError:
    """A page's ``Error("code: detail")`` as its JobError; anything else (a crash) is RenderFailed."""
    message = str(exc)
    for code, error in _PAGE_ERRORS.items():
        marker = f"{code}: "
        if marker in message:
            detail = message.split(marker, 1)[1].splitlines()[0]
            return error(html.unescape(detail)[:1000])
    return RenderFailed(message.splitlines()[0][:500] if message else type(exc).__name__)

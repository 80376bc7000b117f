"""``collab-server worker``: run export jobs until SIGTERM (or, with ``--burst``, until the queue is empty).

It reads the same settings as the server (COLLAB_DATABASE_URL for documents and jobs, COLLAB_BLOB_URL,
COLLAB_TLDRAW_LICENSE_KEY, COLLAB_EXPORT_*). On SIGTERM it claims nothing more and finishes the jobs in
hand (up to COLLAB_SHUTDOWN_TIMEOUT); a job cut off then is retried by another worker when its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from collab_server.errors import CollabError, ConfigError
from collab_server.settings import Settings

logger = logging.getLogger(__name__)


def worker_main(argv: Sequence[str]) -> int:
    from collab_server.cli_args import build_parser, settings_from_args
    from collab_server.logs import configure_logging

    parser = build_parser("collab-server worker", "Run export jobs (SVG, PNG, PDF, JSON) from the job queue.")
    parser.add_argument("--burst", action="store_true", help="exit once no job is left to claim")
    args = parser.parse_args(list(argv))
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"collab-server worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json_lines=settings.log_json)
    try:
        processed = asyncio.run(run_worker(settings, burst=args.burst))
    except CollabError as exc:
        print(f"collab-server worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    logger.info("worker done: %d jobs processed", processed)
    return 0


async def run_worker(settings: Settings, *, burst: bool = False) -> int:
    from exports.wiring import browser_renderer, open_blobs, worker_config
    from exports.worker import Worker
    from persistence.factory import open_store
    from persistence.jobs_factory import open_job_store

    url = settings.database_url.reveal()
    documents = await open_store(
        url, auto_migrate=settings.auto_migrate, pool_size=2, timeout=settings.database_timeout
    )
    jobs = await open_job_store(url, auto_migrate=settings.auto_migrate, timeout=settings.database_timeout)
    blobs = open_blobs(settings)
    renderer = browser_renderer(settings)
    worker = Worker(jobs, documents, blobs, renderer, worker_config(settings, f"{settings.replica_id}-worker"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.stop)
    logger.info(
        "export worker %s: jobs in %s, documents in %s, files in %s%s",
        worker.config.worker_id,
        jobs.describe(),
        documents.describe(),
        blobs.describe(),
        " (burst)" if burst else "",
    )
    try:
        run = asyncio.create_task(worker.run(burst=burst))
        stopped = asyncio.create_task(worker.wait_stopping())
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            try:
                await asyncio.wait_for(run, settings.shutdown_timeout)
            except TimeoutError:  # wait_for cancelled the run: the attempts in hand are abandoned
                logger.warning(
                    "export worker: jobs still running after %g s; their leases will run out", settings.shutdown_timeout
                )
        stopped.cancel()
        return worker.processed
    finally:
        await renderer.close()
        await blobs.close()
        await jobs.close()
        await documents.close()

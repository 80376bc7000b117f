"""Export render times and worker memory, on a warm BrowserRenderer (the worker's renderer, in process).

Boards are drawn by tldraw itself (``window.collabSampleBoard``: geo with labels, text, notes, freehand
draw, frames holding shapes, arrows bound to two shapes). Per format: one warm-up render, then ``--reps``
timed renders of the 200-shape board (median and max reported), one render of the 2,000-shape board in each
format; then ``--jobs`` consecutive small-board jobs while the RSS of the Python process and of every
Chromium process is sampled (growth per job = slope over the second half).

    .venv/bin/python bench/exports_render.py                  # 5 reps, 200 memory jobs
    .venv/bin/python bench/exports_render.py --reps 3 --jobs 60

``--worker N``: also N jobs per format end to end through a real Worker (SQLite job and document stores,
file blob store, this renderer, the worker idle and waiting when each job is enqueued): enqueue to
completed, with the worker's stages (queued = enqueue to claim, load, decode, render, upload).

``--code DIR``: run the same measurements on another checkout's ``exports`` package (its renderer page
built in DIR/exports/renderer/web/dist), e.g. ``git archive main | tar -x -C DIR``.

``--ab DIR``: the same-run baseline on a shared, noisy machine: two warm renderers in two processes, this
checkout's and DIR's, render the same 200-shape board job by job in turn (the order swapped every round),
``--reps`` rounds per format; medians of each side and of the per-round ratio.

    .venv/bin/python bench/exports_render.py --ab /tmp/base --reps 10

Targets (issue 11): 200 shapes SVG <= 1 s, PNG <= 2.5 s, PDF <= 5 s; 2,000 shapes within the job
timeout; memory bounded over 200 consecutive jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = Path(sys.argv[sys.argv.index("--code") + 1]).resolve() if "--code" in sys.argv else REPO
sys.path.insert(0, str(CODE))
if CODE != REPO:  # the worker's decode children (python -m, from the working directory) import it too
    os.environ["PYTHONPATH"] = os.pathsep.join([str(CODE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.chdir(CODE)

from exports.browser import BrowserRenderer  # noqa: E402
from exports.options import ExportFormat, ExportOptions  # noqa: E402
from exports.tldr import Board  # noqa: E402

print(f"exports code from {Path(sys.modules['exports.browser'].__file__ or '').parents[1]}", file=sys.stderr)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE / 2**20
    except OSError:
        return 0.0


def chromium_rss_mib() -> float:
    """RSS of every chromium process that is a descendant of this one."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            if "chrom" in Path(f"/proc/{pid}/comm").read_text():
                total += rss_mib(pid)
        except OSError:
            pass
    return total


def process_tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and every process below it (Chromium, Playwright's driver): what a
    job costs the machine, whatever share of it the job got on a busy one."""
    from exports.priority import descendants

    total = 0.0
    for pid in [root, *descendants(root)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # with the children it reaped: a page's renderer process that exited counts in its zygote's
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


async def timed(renderer: BrowserRenderer, board: Board, fmt: ExportFormat) -> tuple[float, int, dict[str, object]]:
    await renderer.warm()  # a warm worker: browser up and the next page loaded while it was idle
    started = time.perf_counter()
    result = await renderer.render(board, fmt, ExportOptions())
    return time.perf_counter() - started, len(result.data), result.details


async def through_worker(renderer: BrowserRenderer, board: Board, reps: int, directory: Path) -> dict[str, object]:
    """``reps`` jobs per format, each enqueued while the worker idles: seconds from enqueue to completed."""
    from collab_server.secrets import Secret
    from exports.blobs_file import FileBlobStore
    from exports.service import ExportService
    from exports.worker import Worker, WorkerConfig
    from persistence.jobs import JobStatus
    from persistence.jobs_sqlite import SQLiteJobStore
    from persistence.sqlite import SQLiteStore
    from tests.support.boards import board_update

    database = directory / "bench.sqlite3"
    documents = await SQLiteStore(database).open()
    await documents.append_many([(board.room, board_update(board.room, board.records, board.schema))])
    jobs = await SQLiteJobStore(database).open()
    blobs = FileBlobStore(directory / "blobs", signing_key=Secret("bench"))
    service = ExportService(jobs, blobs)
    worker = Worker(jobs, documents, blobs, renderer, WorkerConfig("bench-worker", poll_interval=5.0))
    running = asyncio.create_task(worker.run())
    report: dict[str, object] = {}
    try:
        for fmt in ("json", "svg", "png", "pdf"):
            times, stages = [], []
            for rep in range(reps + 1):  # the first is a warm-up
                await renderer.warm()
                await asyncio.sleep(0.5)  # the worker is waiting for a wake-up, as an idle one is
                started = time.perf_counter()
                job = await service.request(board.room, {"format": fmt})
                finished = (JobStatus.COMPLETED, JobStatus.FAILED)
                while (done := await jobs.get(job.id)) is not None and done.status not in finished:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)  # polls the store: the bench sees what a REST client would
                assert done is not None and done.status is JobStatus.COMPLETED, done and done.error
                if rep:
                    times.append(time.perf_counter() - started)
                    stages.append(dict(done.result.get("stages_ms") or {}))
            median_stages = {k: statistics.median(s.get(k, 0) for s in stages) for k in stages[0]}
            report[fmt] = {
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
                "stages_ms": median_stages,
            }
            print(
                f"through the worker, 200 shapes {fmt}: median {statistics.median(times):.2f} s, "
                f"max {max(times):.2f} s, stages (median ms) {median_stages}",
                flush=True,
            )
    finally:
        worker.stop()
        await running
        await jobs.close()
        await documents.close()
    return report


async def main(reps: int, jobs: int, big: int, worker_reps: int) -> dict[str, object]:
    # niceness 0: the figures are the renderer's own speed (a dedicated worker); in the embedded server it
    # runs in the idle class and takes what CPU the realtime path leaves
    renderer = BrowserRenderer(timeout=300, restart_after=100, niceness=0)
    report: dict[str, object] = {"reps": reps, "jobs": jobs}
    try:
        boards = {}
        for n in [200, *([big] if big else []), *([20] if jobs else [])]:
            started = time.perf_counter()
            data = await renderer.run_page("(n) => window.collabSampleBoard(n)", n)
            boards[n] = Board("bench", data["records"], data["schema"])
            print(
                f"board of {n} shapes drawn: {len(data['records'])} records, {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        for fmt in (ExportFormat.SVG, ExportFormat.PNG, ExportFormat.PDF):
            await timed(renderer, boards[200], fmt)  # warm-up
            times = []
            for _ in range(reps):
                seconds, size, details = await timed(renderer, boards[200], fmt)
                times.append(seconds)
            report[f"200_{fmt.value}"] = {
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
                "bytes": size,
                "details": details,
            }
            print(
                f"200 shapes {fmt.value}: median {statistics.median(times):.2f} s, max {max(times):.2f} s, "
                f"{size / 1024:.0f} KiB {details}",
                flush=True,
            )
        if worker_reps:
            with tempfile.TemporaryDirectory(prefix="exports-bench-") as directory:
                report["worker"] = await through_worker(renderer, boards[200], worker_reps, Path(directory))
        for fmt in (ExportFormat.SVG, ExportFormat.PNG, ExportFormat.PDF) if big else ():
            seconds, size, details = await timed(renderer, boards[big], fmt)
            report[f"{big}_{fmt.value}"] = {"s": round(seconds, 2), "bytes": size, "details": details}
            print(f"{big} shapes {fmt.value}: {seconds:.2f} s, {size / 1024:.0f} KiB {details}", flush=True)
        if not jobs:
            return report
        samples: list[tuple[int, float, float]] = []
        formats = [ExportFormat.SVG, ExportFormat.PNG, ExportFormat.PDF]
        started = time.perf_counter()
        for job in range(jobs):
            await renderer.render(boards[20], formats[job % 3], ExportOptions())
            samples.append((job, rss_mib(os.getpid()), chromium_rss_mib()))
        elapsed = time.perf_counter() - started
        half = samples[len(samples) // 2 :]

        def slope(values: list[float]) -> float:
            xs = [s[0] for s in half]
            mean_x, mean_y = statistics.fmean(xs), statistics.fmean(values)
            den = sum((x - mean_x) ** 2 for x in xs) or 1.0
            return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True)) / den

        report["memory"] = {
            "jobs_per_s": round(jobs / elapsed, 2),
            "python_rss_mib": [round(samples[0][1], 1), round(samples[-1][1], 1)],
            "chromium_rss_mib_first_last_max": [
                round(samples[0][2]),
                round(samples[-1][2]),
                round(max(s[2] for s in samples)),
            ],
            "python_kib_per_job_2nd_half": round(slope([s[1] for s in half]) * 1024, 1),
            "chromium_kib_per_job_2nd_half": round(slope([s[2] for s in half]) * 1024, 1),
        }
        print(json.dumps(report["memory"]), flush=True)
    finally:
        await renderer.close()
    return report


async def serve() -> None:
    """``--serve``: one warm renderer answering JSON lines on stdin (``draw`` a board, ``render`` it)."""
    renderer = BrowserRenderer(timeout=300, restart_after=1000, niceness=0)
    loop = asyncio.get_running_loop()
    board = None
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            request = json.loads(line)
            if request["op"] == "draw":
                data = await renderer.run_page("(n) => window.collabSampleBoard(n)", request["n"])
                board = Board("bench", data["records"], data["schema"])
                answer: dict[str, object] = {"records": len(board.records)}
            else:
                assert board is not None
                # from the end of the last job: the baseline boots each job's page in between, and the
                # branch resets its page then; both are this job's work
                cpu = process_tree_cpu(os.getpid())
                seconds, size, details = await timed(renderer, board, ExportFormat(request["format"]))
                cpu = process_tree_cpu(os.getpid()) - cpu
                answer = {"s": seconds, "cpu_s": cpu, "bytes": size, "timings": details.get("timings")}
            print(json.dumps(answer), flush=True)
    finally:
        await renderer.close()


def alternate(baseline: Path, reps: int) -> dict[str, object]:
    """``--ab``: this checkout and ``baseline`` render in turn, job by job (see the module docstring)."""
    import subprocess

    sides = {}
    for name, code in (("branch", []), ("baseline", ["--code", str(baseline)])):
        sides[name] = subprocess.Popen(
            [sys.executable, __file__, "--serve", *code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(name: str, request: dict[str, object]) -> dict[str, object]:
        side = sides[name]
        assert side.stdin is not None and side.stdout is not None
        side.stdin.write(json.dumps(request) + "\n")
        side.stdin.flush()
        answer: dict[str, object] = json.loads(side.stdout.readline())
        return answer

    report: dict[str, object] = {"reps": reps, "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
    try:
        for name in sides:
            ask(name, {"op": "draw", "n": 200})
        for fmt in ("svg", "png", "pdf"):
            times: dict[str, list[float]] = {"branch": [], "baseline": []}
            cpus: dict[str, list[float]] = {"branch": [], "baseline": []}
            for name in sides:
                ask(name, {"op": "render", "format": fmt})  # warm-up
            for rep in range(reps):
                for name in sides if rep % 2 == 0 else reversed(list(sides)):
                    answer = ask(name, {"op": "render", "format": fmt})
                    times[name].append(float(answer["s"]))  # type: ignore[arg-type]
                    cpus[name].append(float(answer["cpu_s"]))  # type: ignore[arg-type]
            ratios = [b / a for a, b in zip(times["branch"], times["baseline"], strict=True)]
            report[fmt] = {
                "branch_median_s": round(statistics.median(times["branch"]), 3),
                "baseline_median_s": round(statistics.median(times["baseline"]), 3),
                "baseline_over_branch_median": round(statistics.median(ratios), 2),
                # CPU seconds per job (renderer process and Chromium): the work, whatever the machine's load
                "branch_cpu_s": round(statistics.median(cpus["branch"]), 2),
                "baseline_cpu_s": round(statistics.median(cpus["baseline"]), 2),
                "branch_s": [round(t, 2) for t in times["branch"]],
                "baseline_s": [round(t, 2) for t in times["baseline"]],
            }
            print(f"200 shapes {fmt}: {json.dumps(report[fmt])}", flush=True)
    finally:
        for side in sides.values():
            assert side.stdin is not None
            side.stdin.close()
            side.wait(60)
    report["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    return report


if __name__ == "__main__":
    if "--serve" in sys.argv:
        asyncio.run(serve())
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=200, help="consecutive jobs of the memory test (0: skip it)")
    parser.add_argument("--big", type=int, default=2000, help="shapes of the large board (0: skip it)")
    parser.add_argument("--worker", type=int, default=0, help="jobs per format end to end through a Worker")
    parser.add_argument("--code", type=Path, help="measure this checkout's exports package (a baseline)")
    parser.add_argument("--ab", type=Path, help="alternate job by job with this checkout's renderer")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    if args.ab:
        result = alternate(args.ab.resolve(), args.reps)
    else:
        result = asyncio.run(main(args.reps, args.jobs, args.big, args.worker))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))

"""The upstream reproducers in docs/upstream/, run against the installed pycrdt, each in its own process.

Each bug is expected as long as pycrdt is the release the reproducers were confirmed with
(``CONFIRMED_WITH``). Upgrading pycrdt is a one-line change in pyproject.toml; then, for each reproducer:

- XFAIL "still broken upstream": the bug is still there, as documented;
- PASSED: fixed upstream (the reproducer behaves as yjs does): say so in docs/upstream/README.md;
- FAILED: it fails in a new way (a crash became a hang, ...): read its output.

On ``CONFIRMED_WITH`` itself a reproducer that behaves is a failure: it would mean the detection broke.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

UPSTREAM = Path(__file__).resolve().parents[2] / "docs" / "upstream"
CONFIRMED_WITH = "0.14.13"
# The last update of a set applies in microseconds when it does not loop: this is process-startup slack.
HANG_GRACE = 3.0


class Outcome(enum.Enum):
    BEHAVES = "applies the updates as yjs does, or refuses them without changing the document"
    RAISES = "raises or changes the document on a failed apply (exit status 1)"
    CRASHED = "killed by a signal"
    HUNG = "never returns from apply_update"


def run_reproducer(script: str, directory: Path = UPSTREAM) -> tuple[Outcome, str]:
    """Run ``docs/upstream/<script>`` with plain pycrdt; classify how it ended."""
    env = {**os.environ, "RUST_BACKTRACE": "0"}
    with subprocess.Popen(
        [sys.executable, str(directory / script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    ) as process:
        return _classify(script, process)


def _classify(script: str, process: subprocess.Popen[bytes]) -> tuple[Outcome, str]:
    assert process.stdout is not None
    lines: list[str] = []
    try:
        # Read until the last update starts: only then does the hang timer start, so a slow process start
        # on a busy machine is never mistaken for a hang.
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if line.startswith("applying update"):
                number, total = line.split()[-1].split("/")
                if number == total:
                    break
        try:
            # (not communicate(): it would bypass what the line iterator has buffered already)
            process.wait(timeout=HANG_GRACE)
        except subprocess.TimeoutExpired:
            return Outcome.HUNG, "".join(lines)
        lines.append(process.stdout.read().decode(errors="replace"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines)
    if process.returncode < 0:
        return Outcome.CRASHED, output
    if process.returncode == 1 and "BROKEN" in output:
        return Outcome.RAISES, output
    if process.returncode == 0 and "OK:" in output:
        return Outcome.BEHAVES, output
    raise AssertionError(f"{script} ended unexpectedly (status {process.returncode}):\n{output}")


@pytest.mark.parametrize(
    ("script", "broken"),
    [
        ("crash_segfault.py", Outcome.CRASHED),
        ("hang_resolve_conflict.py", Outcome.HUNG),
        ("panic_partial_commit.py", Outcome.RAISES),
        ("runtime_error_partial_commit.py", Outcome.RAISES),
    ],
)
def test_pycrdt_applies_what_yjs_applies(script: str, broken: Outcome) -> None:
    installed = version("pycrdt")
    outcome, output = run_reproducer(script)
    if outcome is Outcome.BEHAVES:
        assert installed != CONFIRMED_WITH, (
            f"{script} behaves on pycrdt {installed}, where the bug was confirmed: the reproducer no longer "
            f"detects it\n{output}"
        )
        return  # fixed upstream
    assert outcome is broken, f"{script} on pycrdt {installed}: expected {broken.name}, got {outcome.name}\n{output}"
    pytest.xfail(f"still broken upstream in pycrdt {installed}: {script} {outcome.value} (docs/upstream/README.md)")


def test_the_runner_tells_a_behaving_script_apart(tmp_path: Path) -> None:
    """The classification itself: a script that applies a plain update cleanly is BEHAVES."""
    script = tmp_path / "fine.py"
    script.write_text(
        "from pycrdt import Doc, Text\n"
        "source = Doc(); source['t'] = Text('hi')\n"
        "print('applying update 1/1', flush=True)\n"
        "Doc().apply_update(source.get_update())\n"
        "print('OK: fine', flush=True)\n"
    )
    assert run_reproducer("fine.py", tmp_path)[0] is Outcome.BEHAVES

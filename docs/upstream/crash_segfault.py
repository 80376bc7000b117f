"""yrs segfaults applying 8 updates that yjs applies without complaint.

    python crash_segfault.py        # pycrdt 0.14.13 (yrs 0.28.0): killed by SIGSEGV

Expected (what yjs 13.6.33 does): all 8 updates apply; the document encodes afterwards.
Exit status: 0 when pycrdt behaves, 1 when it raises, killed by a signal when it crashes.
"""

import sys

from pycrdt import Doc

UPDATES = [
    "010190b7cb9b0a092801016d026b33017800",
    "0101c8f192e0030108010161017c4260000000",
    "0101bfe987c9060008010161017c41d0000000",
    "0107b3cb8dca020007010161020400b3cb8dca0200066e657374656487b3cb8dca0200020400b3cb8dca0207066e657374656488"
    "b3cb8dca0207017c42a600002701016d03737562012800b3cb8dca020f0178017c3f80000000",
    "0102b3a6f7240007010161020400b3a6f72400066e657374656400",
    "0102c8f192e0030287c8f192e00301020400c8f192e00302066e657374656400",
    "0102a5828daf0d0007010161020400a58daf0d00066e657374656400",
    "010790b7cb9b0a000701016102040090b7cb9b0a00066e65737465642101016d037375627f0100012801016d026b330178a790b7cb"
    "9b0a0701280090b7cb9b0a0a0178017c3f8001000190b7cb9b0a010702",
]

# Whether the fault shows at once depends on the heap's layout (even the length of the environment
# changes it): the corruption is always there, the crash is not. Applying the set to fresh documents a
# few times, in one process, makes the crash as good as certain.
ROUNDS = 50

for round_ in range(1, ROUNDS + 1):
    doc = Doc()
    for number, update in enumerate(UPDATES, 1):
        if round_ == ROUNDS:
            print(f"applying update {number}/{len(UPDATES)}", flush=True)
        try:
            doc.apply_update(bytes.fromhex(update))
        except BaseException as exc:  # pyo3's PanicException is a BaseException
            print(f"BROKEN: update {number} raised {type(exc).__name__}: {exc}", flush=True)
            sys.exit(1)
    doc.get_update()
print(f"OK: all updates applied {ROUNDS} times and the document encodes", flush=True)

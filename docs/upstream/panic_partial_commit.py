"""One 48-byte update panics inside yrs, yet changes the document, which then panics on every encode.

    RUST_BACKTRACE=0 python panic_partial_commit.py   # pycrdt 0.14.13 (yrs 0.28.0): BROKEN

With a transaction observer (as every server has: it forwards updates to other clients), apply_update
raises ``pyo3_runtime.PanicException`` (yrs store.rs: ``Option::unwrap()`` on a ``None`` value, in
``Store::write_blocks_from`` while encoding the transaction's update), but the transaction is committed:
the state vector now holds client 54746310 at clock 4. Without an observer, apply_update returns normally
and the next ``get_update()`` panics the same way (``Store::encode_diff``).

Expected (what yjs 13.6.33 does): the update applies (its items wait as pending structs) and the
document encodes. Acceptable too: apply_update refuses it with an exception and leaves the document as
it was.
Exit status: 0 when pycrdt behaves, 1 when the bug shows.
"""

import sys

from pycrdt import Doc

UPDATE = "0102c6b98d9a00ffffffffff0f0401056e6f7465730568c3a96c6c2801016d026b310175027c3f8000007c4000000000"

doc = Doc()
observed: list[bytes] = []
doc.observe(lambda event: observed.append(event.update))
before = doc.get_state()
try:
    doc.apply_update(bytes.fromhex(UPDATE))
except BaseException as exc:  # PanicException is a BaseException, not an Exception
    changed = doc.get_state() != before
    print(f"apply_update raised {type(exc).__name__}: {exc}; document changed anyway: {changed}", flush=True)
    if type(exc).__name__ == "PanicException" or changed:
        print("BROKEN: a failed apply_update panicked or left the document changed", flush=True)
        sys.exit(1)
    print("OK: refused without changing the document", flush=True)
    sys.exit(0)
try:
    doc.get_update()
except BaseException as exc:
    print(f"BROKEN: the update applied but the document no longer encodes: {type(exc).__name__}: {exc}")
    sys.exit(1)
print("OK: applied and the document encodes", flush=True)

"""apply_update raises RuntimeError, but commits (and reports to observers) part of the update anyway.

    python runtime_error_partial_commit.py   # pycrdt 0.14.13 (yrs 0.28.0): BROKEN

Update A (client 1) sets key "k" of root map "m". Update B carries two clients: client 3 sets key "z" of
"m", client 2 inserts a string whose parent is client 1's item — a map value, not a shared type. yrs
raises ``RuntimeError: Cannot apply update: block parent <1#0> must be deleted or shared ref type``,
but client 3's item is integrated and the observer receives it as an update: a server that forwards
observed updates stores and broadcasts part of an update it was told failed.

Expected: either yjs's behaviour (13.6.33 integrates client 3's item and turns client 2's item with a
non-type parent into a GC'd range: no error), or an error that leaves the document unchanged.
Exit status: 0 when pycrdt behaves, 1 when the bug shows.
"""

import sys

from pycrdt import Doc

A = "010101002801016d016b017800"
B = "020103002801016d017a0178010200040001000161" + "00"

doc = Doc()
observed: list[bytes] = []
doc.observe(lambda event: observed.append(event.update))
doc.apply_update(bytes.fromhex(A))
before, seen = doc.get_state(), len(observed)
try:
    doc.apply_update(bytes.fromhex(B))
except BaseException as exc:
    changed = doc.get_state() != before
    reported = len(observed) - seen
    print(f"apply_update raised {type(exc).__name__}: {exc}", flush=True)
    if changed or reported:
        print(f"BROKEN: the failed update changed the document anyway ({reported} observer calls)", flush=True)
        sys.exit(1)
    print("OK: refused without changing the document", flush=True)
    sys.exit(0)
doc.get_update()
print("OK: applied and the document encodes", flush=True)

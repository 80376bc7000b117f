"""yrs never returns from applying the 4th of these updates (an infinite loop in Item::resolve_conflict).

    timeout 10 python hang_resolve_conflict.py    # pycrdt 0.14.13 (yrs 0.28.0): update 4 never returns

Expected (what yjs 13.6.33 does): all 4 updates apply; root map "m" is {"sub": {"x": 1}, "k0": {"a": 1}}.
The loop runs in native code holding the GIL: Python signal handlers (Ctrl-C, SIGTERM) never run.
Exit status: 0 when pycrdt behaves, 1 when it raises; it does not exit when it hangs.
"""

import sys

from pycrdt import Doc

UPDATES = [
    "0102c2dfd2de020b2701016d03737562012800c2dfd2de020b0178017c3f80000000",
    "0101c2dfd2de020a00080161017c42aa400000",
    "0104d7afcade0c002701016d03737562012800d7afcade0c000178017c3f80000008010161017c429a00002801016d026b300176"
    "0101617c3f80000000",
    "0103b7ebf1dc020008010161017c41e000002701016d03737562012800b7ebf1dc02010178017c3f80000000",
]

doc = Doc()
for number, update in enumerate(UPDATES, 1):
    print(f"applying update {number}/{len(UPDATES)}", flush=True)
    try:
        doc.apply_update(bytes.fromhex(update))
    except BaseException as exc:
        print(f"BROKEN: update {number} raised {type(exc).__name__}: {exc}", flush=True)
        sys.exit(1)
doc.get_update()
print("OK: all updates applied and the document encodes", flush=True)

"""yrs: the cost of committing a transaction grows with the length of a text (a performance report).

Appending one short string per transaction to a Y.Text makes each commit slower as the text grows:
yrs squashes the appends into one block, and then measures (``ItemContent::len``) and splits
(``split_str``) that block's whole string at every commit, counting UTF-16 units from its start. So a
server that applies each client update in its own transaction pays O(length) per update. Applying
the same updates in fewer transactions pays it once per transaction. Most of it, with small
transactions, is the observer's: pycrdt's ``TransactionEvent`` encodes the transaction's update when the
event is made, whether the callback reads it or not, and that encoding slices the squashed block at the
clock the transaction started from (``encode_slice``, ``split_str``), again counting from its start.

    python slow_commit.py     # prints microseconds per update, per transaction size
"""

import time

from pycrdt import Doc, Text

source = Doc()
text = source.get("f", type=Text)
updates: list[bytes] = []
source.observe(lambda event: updates.append(event.update))
for i in range(30_000):
    text.insert(len(text), f"{i},")

for observed in (True, False):
    for per_transaction in (1, 8, 32, 300):
        doc = Doc()
        if observed:
            doc.observe(lambda event: event.update)  # what a server does with every commit
        started = time.perf_counter()
        for first in range(0, len(updates), per_transaction):
            with doc.transaction():
                for update in updates[first : first + per_transaction]:
                    doc.apply_update(update)
        elapsed = time.perf_counter() - started
        print(
            f"{'with' if observed else 'without':>7} an observer, {per_transaction:>3} updates per transaction: "
            f"{elapsed / len(updates) * 1e6:7.1f} us/update on average"
        )

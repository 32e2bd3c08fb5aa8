"""The whole store contract, on the RethinkDB store talking to the in-memory fake server.

This checks the store's own logic (claims by compare-and-set, mutations, the reaper, the
changefeed fan-out, paging) without a server; the real-server leg of tests/contract runs
when TQUEUES_TEST_RETHINKDB is set.
"""

from __future__ import annotations

from tests.contract.test_store import *  # noqa: F403 - the same tests, these fixtures

"""The whole store contract, on the RethinkDB store talking to the in-memory fake server.

This checks the store's own logic (claims by compare-and-set, mutations, the reaper with
ttl and retention, the changefeed fan-out, paging) without a server; the real-server leg
of tests/contract runs when TQUEUES_TEST_RETHINKDB is set.
"""

from __future__ import annotations

from tests.contract.test_store import *  # noqa: F403 - the same tests, these fixtures
from tests.contract.test_store_cancel import *  # noqa: F403
from tests.contract.test_store_lifecycle import *  # noqa: F403
from tests.contract.test_store_listing import *  # noqa: F403
from tests.contract.test_store_take_any import *  # noqa: F403

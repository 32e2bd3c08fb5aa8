"""The command lines: ``tqueues_dispatcher`` and ``tqueues_worker`` (docopt usage texts)."""

from __future__ import annotations

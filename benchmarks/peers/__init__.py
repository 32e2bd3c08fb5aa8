"""Code that runs inside each system's own virtualenv: job functions, producers, workers.

Everything here imports only the standard library at module level (and each system's
own package where it is used), so ``benchmarks.peers`` works on ``PYTHONPATH`` from any
of the benchmark's virtualenvs without tqueues installed.
"""

from __future__ import annotations

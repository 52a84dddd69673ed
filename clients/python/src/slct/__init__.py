"""slct: Go's channels and ``select`` as a durable, replicated HTTP service.

This package is its Python client (standard library only):

- ``Client``: the whole HTTP API against several nodes, with failover
  (``slct.client``);
- errors: one class per error code (``slct.errors``), all importable from here;
- ``Worker``: long-polls pending states and runs a handler for each, with lease
  heartbeats (``slct.worker``);
- ``CallbackServer`` and ``verify``: receive callbacks and check their signature
  (``slct.callbacks``).
"""

from .callbacks import BadSignature, CallbackServer, sign, verify
from .client import Case, Client, Received, may_retry, select
from .errors import *  # noqa: F401,F403 (one class per error code)
from .errors import NOTHING_APPLIED, from_answer
from .worker import Worker, WorkerStats

__version__ = "0.1.0"

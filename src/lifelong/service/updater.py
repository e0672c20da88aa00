"""`lifelong worker`: a process that runs the service's updates, so serving replicas only serve.

It loops: queue again (or fail) the updates of workers that died (queue.reap), claim the oldest
queued update (queue.claim: a row lock and a lease), run it in this process (worker.run_update:
screen, train, gate, write the candidate's files, then one transaction that records the version and,
if it passed, promotes it), release the lease. Start as many as you like, on any machine that reaches
the database and the version store; `lifelong serve --updates workers` replicas then follow the
current version as the workers move it.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("lifelong.worker")


@dataclass
class WorkerConfig:
    db_url: str
    versions: str  # a folder or an fsspec URL (the replicas' --versions-dir)
    poll_seconds: float = 1.0
    max_attempts: int = 2  # starts of one update before a dying worker makes it fail instead of retrying
    once: bool = False  # run at most one update, then exit (for scripts and tests)
    threads: int = 1
    nice: int = 0
    trust_code: bool = False  # load models whose network a module:function factory builds


def run_worker(config: WorkerConfig, stop: threading.Event | None = None,
               say: Any = lambda line: print(line, file=sys.stderr, flush=True)) -> int:
    """The worker loop; returns the number of updates it ran."""
    import torch

    from lifelong.service import queue
    from lifelong.service.database import normalise_url
    from lifelong.service.store import Store
    from lifelong.service.versions import open_versions
    from lifelong.service.worker import run_update

    stop = stop or threading.Event()
    if config.nice:
        os.nice(config.nice)
    torch.set_num_threads(config.threads)
    store = Store(normalise_url(config.db_url))
    store.migrate()
    versions = open_versions(config.versions, trust_code=config.trust_code)
    owner = queue.worker_owner()
    say(f"lifelong worker {owner.removeprefix(queue.WORKER)}: taking updates from {store.url.split('@')[-1]}, "
        f"versions in {versions.location}")
    ran = 0
    try:
        while not stop.is_set():
            for update_id, status in queue.reap(store, versions.remove, config.max_attempts):
                say(f"lifelong worker: update {update_id} lost its worker: {status}")
            claimed = queue.claim(store, owner, lambda i: f"u{i}-{secrets.token_hex(4)}")
            if claimed is None:
                if config.once and not queue.queued_count(store):
                    break
                stop.wait(config.poll_seconds)
                continue
            update, lease = claimed
            say(f"lifelong worker: update {update.id} (attempt {update.attempts}) started")
            try:
                status = run_update(store, versions, update.id, owner)
            except Exception as exc:  # the update failed, the worker goes on
                path = store.fail_update(update.id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}",
                                         owner)
                if path:
                    versions.remove(path)
                status = "failed"
            finally:
                lease.release()
            ran += 1
            say(f"lifelong worker: update {update.id} {status}")
            if config.once:
                break
    finally:
        store.close()
    return ran


def main(config: WorkerConfig) -> int:
    """`lifelong worker`: run until SIGTERM or SIGINT (an update under way is finished first)."""
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second signal: stop now (the update is retried by the next worker)
            raise KeyboardInterrupt
        print("lifelong worker: stopping after the current update (again to stop now)", file=sys.stderr, flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        run_worker(config, stop)
    except KeyboardInterrupt:
        return 130
    return 0


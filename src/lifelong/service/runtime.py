"""The serving process: which version answers, and the updates it starts and watches.

`Service.start` upgrades the schema, records the served model as version 1 on first use (a copy in
the versions directory), recovers from a crash (updates whose process died are failed and their
feedback returned to the pending pool; half-written model directories are removed), loads the
current version and starts a scheduler thread. That thread starts queued updates in worker
processes (one at a time across every process sharing the store), starts them by itself every K
pending examples with auto-update, and follows the current-version pointer in the database, so a
promotion or rollback made anywhere is served here within a poll interval. Switching versions is
one reference assignment: a request is answered wholly by the version it started with.

With `updates="workers"` a replica starts no update itself: `lifelong worker` processes claim them
(queue.py), and every replica re-queues the updates of workers that died. Versions live in a folder
or under an fsspec URL shared by every replica and worker (versions.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from lifelong.checkpoint import CheckpointError, verify
from lifelong.config import Config
from lifelong.service import queue
from lifelong.service.auth import Authenticator
from lifelong.service.database import default_url, default_versions_dir, normalise_url
from lifelong.service.serving import InputError, ServedModel
from lifelong.service.store import Store
from lifelong.service.tables import RUNNING, Version
from lifelong.service.versions import LocalVersions, open_versions
from lifelong.service.worker import DB_ENV, UpdateSettings

log = logging.getLogger("lifelong.service")
FIRST = "v1"  # the served model's copy: version 1


@dataclass
class ServiceConfig(Config):
    """Everything `lifelong serve` decides."""

    model_dir: Path
    db_url: str | None = None  # None: SQLite beside the model directory
    versions_dir: Path | str | None = None  # a folder or an fsspec URL; None: DIR.versions beside the model
    host: str = "127.0.0.1"
    port: int = 8000
    auto_update: int | None = None  # start an update every K pending feedback examples
    max_body_bytes: int = 4 * 2**20
    update: UpdateSettings = field(default_factory=UpdateSettings)
    feedback_rate: int | None = None  # feedback examples per minute per API key (None: no limit)
    min_update_examples: int = 2
    poll_seconds: float = 0.25
    worker_nice: int = 10
    updates: str = "here"  # "here": this process starts queued updates; "workers": `lifelong worker` processes do
    max_attempts: int = 2  # starts of an update whose worker keeps dying, before it fails
    device: str = "cpu"  # where served models predict (updates train on the CPU: their screens are CPU code)
    trust_code: bool = False  # load a model whose network a module:function factory builds (runs that code)


def pid_alive(pid: int) -> bool:
    """Whether a process is running (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class Service:
    def __init__(self, config: ServiceConfig):
        if config.updates not in ("here", "workers"):
            raise ValueError(f"updates run 'here' or by 'workers', not {config.updates!r}")
        self.config = config
        self.versions = open_versions(config.versions_dir or default_versions_dir(config.model_dir),
                                      trust_code=config.trust_code)
        # the local folder of versions (None when they live under a URL)
        self.versions_dir = self.versions.root if isinstance(self.versions, LocalVersions) else None
        self.db_url = normalise_url(config.db_url or default_url(config.model_dir))
        self.store = Store(self.db_url)
        self.auth = Authenticator(self.store)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}"
        self._served: ServedModel | None = None
        self._loaded: OrderedDict[int, ServedModel] = OrderedDict()
        self._switch = threading.RLock()  # guards the loaded versions and the switch between them
        self._worker: tuple[int, subprocess.Popen[bytes]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._text_features: Callable[[Sequence[str]], Tensor] | None = None
        self._reaped_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, scheduler: bool = True) -> None:
        verify(self.config.model_dir)  # before anything is created beside it
        self.store.migrate()
        self._bootstrap()
        self.recover()
        self.switch_to(self.store.current_version())
        if scheduler:
            self._thread = threading.Thread(target=self._loop, name="lifelong-scheduler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._worker is not None:
            update_id, proc = self._worker
            proc.kill()
            proc.wait()
            self._worker = None
            self._fail(update_id, "the service stopped during the update")
        self.store.close()

    def _bootstrap(self) -> None:
        """Version 1 is a verified copy of the model directory, made once (atomically: copy, rename; or
        uploaded with its manifest last)."""
        model_dir = Path(self.config.model_dir)
        source = verify(model_dir)
        self.versions.publish(FIRST, model_dir)
        if self.versions.files(FIRST) != source["files"]:
            raise CheckpointError(f"the store {self.db_url} and {self.versions.location} belong to another model "
                                  f"than {model_dir} (its version 1 differs); give another --db and --versions-dir")
        self.store.bootstrap(FIRST)

    def recover(self) -> None:
        """Fail updates whose process on this host is gone; remove model directories left half-written.
        (Updates of `lifelong worker` processes are `reap`ed instead: queued again or failed.)"""
        self.reap()
        for update in self.store.updates(RUNNING):
            if (update.owner or "").startswith(queue.WORKER):
                continue
            host, _, pid = (update.owner or "").rpartition(":")
            if host == self.host and pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
                self._fail(update.id, "the service process running it stopped", update.owner)
        for name in self.versions.temporary():
            pid = name.rsplit(".tmp-", 1)[1].split("-")[0]
            if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
                self.versions.remove(name)

    def reap(self) -> None:
        """Queue again (or fail) the updates of `lifelong worker` processes that died, wherever they ran."""
        for update_id, status in queue.reap(self.store, self.versions.remove, self.config.max_attempts):
            log.warning("update %s lost its worker: %s", update_id, status)

    def _fail(self, update_id: int, error: str, owner: str | None = None) -> None:
        path = self.store.fail_update(update_id, error, owner or self.owner)
        if path:
            self.versions.remove(path)

    # -- versions --------------------------------------------------------------------------------------
    @property
    def current(self) -> ServedModel:
        served = self._served
        assert served is not None, "start() loads the current version"
        return served

    def text_features(self) -> Callable[[Sequence[str]], Tensor]:
        if self._text_features is None:
            from lifelong.service.serving import TextFeatures

            self._text_features = TextFeatures()
        return self._text_features

    def load(self, number: int) -> ServedModel:
        """A version ready to serve (the last few are kept loaded, so a rollback is immediate)."""
        with self._switch:
            if number in self._loaded:
                self._loaded.move_to_end(number)
                return self._loaded[number]
            row = self.store.version(number)
            if row is None:
                raise LookupError(f"there is no version {number}")
            saved = self.versions.load(row.path)
            served = ServedModel(number, saved, self.text_features() if saved.spec.input["kind"] == "text" else None,
                                 self.config.device)
            self._loaded[number] = served
            while len(self._loaded) > 4:
                self._loaded.popitem(last=False)
            return served

    def switch_to(self, number: int) -> ServedModel:
        with self._switch:
            if self._served is None or self._served.version != number:
                self._served = self.load(number)  # one assignment: requests see the old or the new version
            return self._served

    def set_current(self, number: int, key_id: int | None, rollback: bool) -> Version:
        """Promote (any kept version) or roll back (to a version promoted before); served at once."""
        self.load(number)  # fails before the pointer moves if the files cannot be read
        version = self.store.set_current(number, "version.rollback" if rollback else "version.promote", key_id,
                                         only_promoted=rollback)
        self.switch_to(number)
        return version

    # -- updates ---------------------------------------------------------------------------------------
    def settings(self, request: dict[str, Any]) -> UpdateSettings:
        """The update settings: the service's, with what a request overrides. InputError if bad."""
        from lifelong.strategies import build_strategy

        base = self.config.update
        strategy = request.get("strategy") or base.strategy
        options = request.get("options")
        if strategy == self.current.spec.strategy and options:
            raise InputError(f"options apply to a strategy started fresh; {strategy} carries the current version's "
                             "state with its own settings")
        if strategy != self.current.spec.strategy:
            try:
                build_strategy(strategy, options or base.options)
            except ValueError as exc:
                raise InputError(str(exc)) from None
        picked = {k: request[k] for k in ("epochs", "lr", "batch_size") if request.get(k) is not None}
        return replace(base, strategy=strategy, options=options or base.options, **picked)

    def request_update(self, request: dict[str, Any], key_id: int | None) -> tuple[int, bool]:
        """Queue an update; (id, created). ValueError when too little feedback is pending."""
        settings = self.settings(request)
        return self.store.create_update(settings.to_dict(), key_id, self.config.min_update_examples)

    def _start_update(self) -> None:
        update = self.store.claim_update(self.owner, lambda i: f"u{i}-{secrets.token_hex(4)}")
        if update is None or update.status != "training":
            return
        command = [sys.executable, "-m", "lifelong.service.worker", "--update", str(update.id), "--versions-dir",
                   self.versions.location, "--owner", self.owner, "--parent-pid", str(os.getpid()),
                   "--nice", str(self.config.worker_nice)] + (["--trust-code"] if self.config.trust_code else [])
        try:
            proc = subprocess.Popen(command, env={**os.environ, DB_ENV: self.db_url}, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self._fail(update.id, f"could not start the update process: {exc}")
            return
        self._worker = (update.id, proc)

    def _reap(self) -> None:
        if self._worker is None:
            return
        update_id, proc = self._worker
        code = proc.poll()
        if code is None:
            return
        self._worker = None
        self._fail(update_id, f"the update process exited with code {code} before finishing")  # no-op if it did

    def tick(self) -> None:
        """One round of the scheduler: reap, auto-update, start, follow the current version."""
        self._reap()
        if time.monotonic() - self._reaped_at > 1.0:  # a dead worker's update is queued again within a second or so
            self._reaped_at = time.monotonic()
            self.reap()
        k = self.config.auto_update
        if k and self.store.pending_count() >= k:
            with contextlib.suppress(ValueError):  # the feedback was taken by an update in the meantime
                self.store.create_update(self.config.update.to_dict(), None,
                                         max(k, self.config.min_update_examples), "service (auto-update)")
        if self.config.updates == "here" and self._worker is None and self.store.updates(("queued",)):
            self._start_update()
        self.follow()

    def follow(self) -> ServedModel:
        """Serve the version the store points to (moved by a worker or another process)."""
        current = self.store.current_version()
        return self.switch_to(current) if current != self.current.version else self.current

    def _loop(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.tick()
            except Exception:  # a database hiccup must not end the scheduler; the next tick retries
                log.exception("scheduler tick failed")

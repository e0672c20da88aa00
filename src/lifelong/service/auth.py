"""API keys and roles: reader (predict, read) < contributor (+ feedback) < maintainer (+ updates,
promote, rollback).

A key is a random 256-bit token shown once when it is made; the store keeps only its SHA-256 (a
random key of that length needs no salt or slow hash: nothing about it can be guessed). Lookups are
cached for a couple of seconds, so a revoked key stops working within that time in every process.

>>> key = new_key()
>>> key.startswith("ll_") and len(hash_key(key)) == 64
True
>>> allows("maintainer", "contributor"), allows("reader", "contributor")
(True, False)
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from lifelong.service.tables import ROLES

CACHE_SECONDS = 2.0


def new_key() -> str:
    return "ll_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def allows(role: str, needed: str) -> bool:
    """Whether a key with `role` may do what needs `needed`."""
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's id, role and name."""

    key_id: int
    role: str
    name: str


class _KeyRow(Protocol):
    id: int
    role: str
    name: str


class _KeyStore(Protocol):
    def key_by_hash(self, key_hash: str) -> _KeyRow | None: ...


class Authenticator:
    """Key -> Principal (or None for an unknown or revoked key), with a short cache."""

    def __init__(self, store: _KeyStore, cache_seconds: float = CACHE_SECONDS):
        self.store, self.cache_seconds = store, cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def identify(self, key: str) -> Principal | None:
        if not key or len(key) > 200:
            return None
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        row = self.store.key_by_hash(digest)
        principal = None if row is None else Principal(row.id, row.role, row.name)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown keys sent in bulk must not grow memory without bound
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal

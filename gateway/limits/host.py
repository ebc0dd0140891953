"""``max_parallel_requests`` held across the worker processes of one host (``gateway serve
--workers N``) without Redis, or while Redis is away.

Each slot of a deployment is a lock file; a request holds one with ``flock``, so the workers
together never run more than the configured number, and the kernel frees the slots of a
worker that dies. Taking and giving back a slot are two system calls; nothing is shared but
the files.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from gateway.deployment import Deployment


class HostSlots:
    """The host's slots per deployment, in ``directory`` (one per ``gateway serve`` run)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._files: dict[str, list[int]] = {}  # deployment id -> one descriptor per slot
        self._taken: dict[str, set[int]] = {}  # deployment id -> the slots this process holds
        self._leases: dict[str, tuple[str, int]] = {}  # lease -> (deployment id, slot)
        self._forgotten: set[str] = set()  # deployments gone, whose files close once nothing holds them

    def take(self, deployment: Deployment, lease: str) -> bool:
        """A free slot of ``deployment`` for ``lease``, or False when every one is held."""
        if not deployment.max_parallel:
            return True
        files = self._slot_files(deployment)
        taken = self._taken.setdefault(deployment.id, set())
        for slot, descriptor in enumerate(files):
            # flock on one descriptor never conflicts with itself: this process's own slots are skipped.
            if slot in taken:
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            taken.add(slot)
            self._leases[lease] = (deployment.id, slot)
            return True
        return False

    def give_back(self, lease: str) -> None:
        """Free the slot ``lease`` holds, if it holds one."""
        held = self._leases.pop(lease, None)
        if held is None:
            return
        deployment_id, slot = held
        self._taken[deployment_id].discard(slot)
        fcntl.flock(self._files[deployment_id][slot], fcntl.LOCK_UN)
        if deployment_id in self._forgotten:
            self.forget(deployment_id)

    def forget(self, deployment_id: str) -> None:
        """A deployment left (a pod gone): close its slot files now, or once its last slot is back."""
        if self._taken.get(deployment_id):
            self._forgotten.add(deployment_id)
            return
        self._forgotten.discard(deployment_id)
        self._taken.pop(deployment_id, None)
        for descriptor in self._files.pop(deployment_id, []):
            os.close(descriptor)

    def close(self) -> None:
        """Close every slot file (freeing what this process holds)."""
        for files in self._files.values():
            for descriptor in files:
                os.close(descriptor)
        self._files.clear()
        self._taken.clear()
        self._leases.clear()
        self._forgotten.clear()

    def _slot_files(self, deployment: Deployment) -> list[int]:
        files = self._files.get(deployment.id)
        count = deployment.max_parallel or 0
        if files is None:
            name = hashlib.sha256(deployment.id.encode()).hexdigest()[:24]  # ids carry pod addresses
            files = [
                os.open(self._directory / f"{name}.{slot}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                for slot in range(count)
            ]
            self._files[deployment.id] = files
        return files

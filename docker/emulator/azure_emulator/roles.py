"""Role assignments changed at run time (admin API), with a deterministic stand-in for propagation.

On Azure a new role assignment takes effect only after it has propagated, which takes minutes
(Azure RBAC docs); until then requests are denied exactly as without the role. The emulator does
not use time: an assignment made with `after_denials=N` takes effect once N requests by that
identity to that scope have been denied. A removal takes effect at once. Both override the
fixture's `roles` until `reset`.
"""

from __future__ import annotations

import threading
from typing import Any

Key = tuple[str, str, str]  # (lower-case client id, role, scope name)


class RoleAssignments:
    """Run-time assignments (pending or in effect) and removals. One lock: each check is one short update."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assigned: dict[Key, int] = {}  # denials still to come before the assignment takes effect
        self._removed: set[Key] = set()  # removed: the fixture's grant no longer counts

    def clear(self) -> None:
        with self._lock:
            self._assigned.clear()
            self._removed.clear()

    def assign(self, client_id: str, role: str, scope: str, after_denials: int) -> None:
        key = (client_id.lower(), role, scope)
        with self._lock:
            self._assigned[key] = after_denials

    def remove(self, client_id: str, role: str, scope: str, granted_by_fixture: bool) -> bool:
        """Remove the assignment (run-time or the fixture's); False if there was none to remove."""
        key = (client_id.lower(), role, scope)
        with self._lock:
            had = key in self._assigned or (granted_by_fixture and key not in self._removed)
            if had:
                self._assigned.pop(key, None)
                self._removed.add(key)
            return had

    def allows(self, client_id: str, role: str, scope: str, granted_by_fixture: bool) -> bool:
        """Whether the identity holds the role on the scope for this request.

        A pending assignment counts this request as one of its denials (so it is denied).
        """
        key = (client_id.lower(), role, scope)
        with self._lock:
            if granted_by_fixture and key not in self._removed:
                return True
            pending = self._assigned.get(key)
            if pending is None:
                return False
            if pending == 0:
                return True
            self._assigned[key] = pending - 1
            return False

    def describe(self) -> list[dict[str, Any]]:
        """Every run-time change: assignments with the denials still to come, and removals."""
        with self._lock:
            assigned = [
                {"client_id": c, "role": r, "scope": s, "state": "pending" if n else "active", "pending_denials": n}
                for (c, r, s), n in self._assigned.items()
            ]
            removed = [
                {"client_id": c, "role": r, "scope": s, "state": "removed", "pending_denials": 0}
                for (c, r, s) in self._removed
                if (c, r, s) not in self._assigned
            ]
        return sorted(assigned + removed, key=lambda entry: (entry["client_id"], entry["role"], entry["scope"]))

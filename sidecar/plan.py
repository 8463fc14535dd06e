"""Plan the fetches: identical references become one fetch, grouped per store and location."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field

from sidecar.references import Reference, Variable
from sidecar.stores.base import Store

FetchId = tuple[str, Hashable]  # (store kind, the store's key)


@dataclass
class Plan:
    variables: list[Variable]
    stores: Mapping[str, Store]
    # Every distinct fetch, in first-use order, per store kind and then per location (vault, connection).
    fetches: dict[str, dict[str, list[Hashable]]] = field(default_factory=dict)
    users: dict[FetchId, list[str]] = field(default_factory=dict)  # the variables each fetch is for

    def fetch_id(self, reference: Reference) -> FetchId:
        return (reference.store, self.stores[reference.store].key(reference))

    @property
    def fetch_count(self) -> int:
        return sum(len(keys) for groups in self.fetches.values() for keys in groups.values())

    @property
    def audiences(self) -> list[str]:
        return sorted(
            {self.stores[kind].audience(keys[0]) for kind, groups in self.fetches.items() for keys in groups.values()}
        )


def make_plan(variables: list[Variable], stores: Mapping[str, Store], known: Collection[FetchId] = ()) -> Plan:
    """`known`: fetches whose result is already at hand (a pinned version read in an earlier round)."""
    plan = Plan(variables, stores)
    seen: set[FetchId] = set(known)
    for variable in variables:
        for reference in variable.references:
            fetch_id = plan.fetch_id(reference)
            plan.users.setdefault(fetch_id, []).append(variable.name)
            if fetch_id in seen:
                continue
            seen.add(fetch_id)
            store = stores[reference.store]
            groups = plan.fetches.setdefault(reference.store, {})
            groups.setdefault(store.location(fetch_id[1]), []).append(fetch_id[1])
    return plan

"""The plugin's settings: what a client asked for (checked on the client) and what they
resolve to where the store is (on the scheduler: its config, its disk's free space)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from . import _config
from .materializer import Policy, get_policy


@dataclass(frozen=True, slots=True)
class Settings:
    """Store, budget, policy, workflow and solver; None means "the default where it runs"."""

    store: str | None = None
    budget: int | str | None = None
    policy: str | None = None
    workflow: str | None = None
    solver: str | None = None
    bytes: int = 0
    """The budget in bytes, once resolved."""

    @classmethod
    def requested(
        cls,
        store: str | os.PathLike[str] | None = None,
        budget: int | str | None = None,
        policy: str | None = None,
        workflow: str | None = None,
        solver: str | None = None,
    ) -> Settings:
        """Settings as given, checked without touching any disk: a bad budget or policy name
        is a HelixConfigError where the call was made."""
        _config.check_budget(budget)
        if policy is not None:
            get_policy(policy)
        return cls(None if store is None else os.fspath(store), budget, policy, workflow, solver)

    def resolve(self) -> Settings:
        """Every setting filled in from dask.config (code defaults when unset) where this
        runs; the store path made absolute, the budget in bytes (a share of the free space of
        the store's disk when not set)."""
        from ._location import store_location  # a URL stays a URL; a path becomes absolute

        store = store_location(self.store or str(_config.get("store")))
        budget = self.budget if self.budget is not None else _config.get("budget")
        policy = str(self.policy or _config.get("policy"))
        get_policy(policy)
        return Settings(
            store=store,
            budget=budget,  # type: ignore[arg-type]
            policy=policy,
            workflow=str(self.workflow or _config.get("workflow") or "default"),
            solver=str(self.solver or _config.get("solver")),
            bytes=_config.resolve_budget(budget, store),
        )

    def merged(self, installed: Settings) -> Settings:
        """These settings, with those not given taken from ``installed``."""
        return Settings(
            *(
                getattr(installed, n) if getattr(self, n) is None else getattr(self, n)
                for n in ("store", "budget", "policy", "workflow", "solver")
            )
        )

    def policy_object(self) -> Policy:
        return get_policy(str(self.policy))

    def as_tuple(self) -> tuple[str, str, str, str, str]:
        return (
            str(self.store),
            repr(self.budget),
            str(self.policy),
            str(self.workflow),
            str(self.solver),
        )

    def conflicts(self, installed: Settings) -> dict[str, tuple[object, object]]:
        """The settings given here that differ from ``installed`` (resolved on the same
        machine): name -> (installed, given). Settings not given never conflict."""
        given = replace(self, store=self.resolved_store(), bytes=0)
        out = {}
        for name in ("store", "budget", "policy", "workflow", "solver"):
            mine, theirs = getattr(given, name), getattr(installed, name)
            if mine is None:
                continue
            if name == "budget":
                differs = theirs is None or _config.check_budget(mine) != installed.bytes
            else:
                differs = mine != theirs
            if differs:
                out[name] = (theirs, mine)
        return out

    def resolved_store(self) -> str | None:
        from ._location import store_location

        return None if self.store is None else store_location(self.store)

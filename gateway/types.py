"""Small shared types: JSON values, job statuses and event types."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

JSON: TypeAlias = Any
"""Any value orjson can read or write."""

JSONObject: TypeAlias = dict[str, Any]

Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "expired"})

EventType = Literal["queued", "started", "progress", "result", "error", "cancelled", "expired"]
TERMINAL_EVENTS: frozenset[str] = frozenset({"result", "error", "cancelled", "expired"})

"""The AMQP wire vocabulary (pinned) has one home, gateway/wire.py, with the exact strings
workers in every language use; the Python worker kit takes it without the server."""

from __future__ import annotations

import subprocess
import sys

from gateway import wire
from gateway.wire import AnswerType, answer_type


def test_the_pinned_strings() -> None:
    assert [t.value for t in AnswerType] == ["result", "progress", "error", "started", "heartbeat"]
    assert AnswerType.RESULT == "result" and isinstance(AnswerType.RESULT, str)
    assert answer_type(None) == answer_type("") == "result"
    assert answer_type("progress") == AnswerType.PROGRESS
    assert answer_type("bogus") == "bogus"  # kept, to be logged and dropped
    assert (wire.HEADER_ATTEMPT, wire.HEADER_DEADLINE, wire.HEADER_LEASE_SECONDS) == (
        "x-attempt",
        "x-deadline",
        "x-lease-seconds",
    )
    assert (
        wire.ANSWERS_QUEUE,
        wire.DEAD_LETTER_EXCHANGE,
        wire.DEAD_LETTER_QUEUE,
        wire.CANCEL_EXCHANGE,
        wire.CANCEL_TYPE,
        wire.NOTICES_EXCHANGE,
        wire.STORE_MARKER_QUEUE,
        wire.PROBE_ROUTING_KEY,
    ) == (
        "gateway.answers",
        "gateway.dead-letter",
        "gateway.dead-letters",
        "gateway.cancel",
        "cancel",
        "gateway.notices",
        "gateway.store",
        "gateway.probe",
    )


def test_the_worker_kit_imports_no_server_module() -> None:
    server = ("gateway.broker", "gateway.service", "gateway.app", "starlette", "prometheus_client")
    code = (
        "import sys, gateway.worker, gateway.wire; "
        f"print([m for m in sys.modules if m.startswith({server!r})])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

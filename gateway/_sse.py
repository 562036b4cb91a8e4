"""A Server-Sent Events parser that follows the WHATWG event-stream algorithm exactly
(the same one `EventSource` runs), checked by schemas/vectors/sse-frames.json."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    id: str
    event: str
    data: str


class SSEParser:
    """Feed text chunks as they arrive; get complete events back."""

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: str) -> Iterator[SSEEvent]:
        self._pending += chunk
        while True:
            cut = _line_end(self._pending)
            if cut is None:
                return
            end, after = cut
            line, self._pending = self._pending[:end], self._pending[after:]
            event = self._line(line)
            if event is not None:
                yield event

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, such as a heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEEvent(self.last_event_id, event or "message", "\n".join(data))


def _line_end(text: str) -> tuple[int, int] | None:
    """Where the first line ends (CRLF, LF or CR), and where the next begins."""
    lf, cr = text.find("\n"), text.find("\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr + 1 == len(text):
        return None  # a CR at the very end may be half of a CRLF: wait for more
    return cr, cr + 2 if text[cr + 1] == "\n" else cr + 1

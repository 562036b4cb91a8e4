"""Topic contracts: `schemas/topics/<name>.json`, loaded and compiled once at start-up.

Each file is a draft-07 JSON Schema whose `definitions.message` (required) is the schema of
every message of the topic family `<name>`; retention lives under `x-gateway`. The files
are read as operation contracts are (gateway/contracts.py): the same `$ref` rules, the same
validators, the same error details, so a 422 for a message reads like one for a request.

A *topic* is a contract name, or that name followed by more dot-separated words
(`chat.room.42`): a key within the family. The longest contract name that prefixes a
topic, word by word, decides which contract applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from jsonschema import Draft7Validator

from gateway.contracts import (
    ContractFolder,
    checked,
    is_shared_file,
    passing_validator,
    read_contract_file,
    validation_details,
    validator_for,
)
from gateway.errors import BadRequest, ContractError, InvalidRequest, NotFound
from gateway.types import JSON, JSONObject

WORD = r"[A-Za-z0-9_-]+"
TOPIC = re.compile(rf"^{WORD}(?:\.{WORD})*$")
"""A topic: dot-separated words, nothing AMQP would read as a wildcard (`*`, `#`)."""
MAX_TOPIC_BYTES = 255  # an AMQP routing key's limit

DEFAULT_MAX_AGE = "1D"
DEFAULT_MAX_BYTES = 1_000_000_000
MAX_SEGMENT_BYTES = 500_000_000  # RabbitMQ's default stream segment size
AGE = re.compile(r"^[0-9]+[YMDhms]$")

SETTINGS_SCHEMA: JSONObject = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "description": {"type": "string"},
        "max_age": {
            "oneOf": [
                {"type": "string", "pattern": AGE.pattern},
                {"type": "integer", "minimum": 1},
            ]
        },
        "max_bytes": {"type": "integer", "minimum": 1},
    },
}
_settings_validator = Draft7Validator(SETTINGS_SCHEMA)


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """The contract's `x-gateway` object with defaults filled in."""

    description: str = ""
    max_age: str | int = DEFAULT_MAX_AGE
    """Messages older than this are dropped from the stream: RabbitMQ's notation (`1D`,
    `12h`, `30m`, `10s`; also `Y`, `M`), or a number of seconds."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """The stream keeps at most about this many bytes (whole segments are dropped)."""

    def to_json(self) -> JSONObject:
        return {
            "description": self.description,
            "max_age": self.max_age,
            "max_bytes": self.max_bytes,
        }

    def stream_arguments(self) -> JSONObject:
        """The stream queue's arguments. Retention by size drops whole segments, so a
        segment is at most a quarter of `max_bytes`: the stream keeps 75-100% of it."""
        age = self.max_age if isinstance(self.max_age, str) else f"{self.max_age}s"
        return {
            "x-queue-type": "stream",
            "x-max-age": age,
            "x-max-length-bytes": self.max_bytes,
            "x-stream-max-segment-size-bytes": max(
                min(self.max_bytes // 4, MAX_SEGMENT_BYTES), 4096
            ),
        }


@dataclass(frozen=True, slots=True)
class TopicContract:
    name: str
    path: Path
    document: JSONObject
    settings: TopicSettings
    message: Draft7Validator
    passes: Draft7Validator | None
    """A cheaper validator that accepts what `message` accepts (see gateway/contracts.py
    `passing_validator`); the details of a failure still come from `message`."""

    def message_errors(self, data: JSON) -> list[JSONObject]:
        if (self.passes or self.message).is_valid(data):
            return []
        return validation_details(self.message.iter_errors(data))

    def validate_message(self, data: JSON) -> None:
        """422 with the details, as for an operation's request."""
        details = self.message_errors(data)
        if details:
            raise InvalidRequest(
                f"message does not match the contract of topic {self.name}: "
                f"{details[0]['message']}",
                details=details,
            )

    async def check_message(self, data: JSON, size: int) -> None:
        """`validate_message`, off the event loop if the message is large."""
        await checked(lambda: self.validate_message(data), size)


def check_topic(topic: str) -> str:
    """`topic` if well formed, else 400 `invalid_topic`."""
    if not TOPIC.match(topic) or len(topic.encode()) > MAX_TOPIC_BYTES:
        raise BadRequest(
            f"{topic!r} is not a topic: dot-separated words of letters, digits, '_' and "
            f"'-', at most {MAX_TOPIC_BYTES} bytes",
            code="invalid_topic",
        )
    return topic


def load_topic_contract(path: Path, folder: ContractFolder | None = None) -> TopicContract:
    name = path.name.removesuffix(".json")
    where = str(path)
    if not TOPIC.match(name) or name.startswith("amq."):
        raise ContractError(f"{where}: {name!r} is not a valid topic name")
    if folder is None:
        folder = ContractFolder(path.parent)
    document, raw_settings = read_contract_file(
        path, folder, "topic contract", ("message",), _settings_validator
    )
    try:
        return TopicContract(
            name=name,
            path=path,
            document=document,
            settings=TopicSettings(**raw_settings),
            message=validator_for(document, "message", folder.registry),
            passes=passing_validator(document, "message", folder.registry),
        )
    except Exception as exc:  # e.g. an unresolvable $ref found while compiling
        raise ContractError(f"{where}: {exc}") from exc


class TopicRegistry(Mapping[str, TopicContract]):
    """All topic contracts, by name; `for_topic` finds the one that applies to a topic."""

    def __init__(self, contracts: list[TopicContract]) -> None:
        self._by_name = {c.name: c for c in sorted(contracts, key=lambda c: c.name)}

    @classmethod
    def from_directory(cls, directory: Path | str | None) -> TopicRegistry:
        """The folder's `<name>.json` files; none if there is no such folder (topics are
        optional; operations are not)."""
        if directory is None or not Path(directory).is_dir():
            return cls([])
        directory = Path(directory)
        folder = ContractFolder(directory)
        names = sorted(p for p in directory.glob("*.json") if not is_shared_file(Path(p.name)))
        return cls([load_topic_contract(p, folder) for p in names])

    def lookup(self, topic: str) -> TopicContract | None:
        """The contract of the longest name that prefixes `topic` by whole words."""
        words = topic.split(".")
        for end in range(len(words), 0, -1):
            contract = self._by_name.get(".".join(words[:end]))
            if contract is not None:
                return contract
        return None

    def for_topic(self, topic: str) -> TopicContract:
        """`lookup`, or 400 for a malformed topic and 404 for one no contract covers."""
        contract = self.lookup(check_topic(topic))
        if contract is None:
            raise NotFound(f"no topic contract covers {topic!r}", code="unknown_topic")
        return contract

    def __getitem__(self, name: str) -> TopicContract:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

"""Topic contracts: loaded like operation contracts, refused with a reason when broken; the
longest contract name that prefixes a topic, word by word, applies; topics are checked
before they reach AMQP (no wildcards)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.errors import BadRequest, ContractError, InvalidRequest, NotFound
from gateway.topic_contracts import TopicRegistry

MESSAGE = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}


def write(folder: Path, name: str, document: object) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_bytes(orjson.dumps(document))


def contract(**settings: object) -> dict[str, object]:
    document: dict[str, object] = {"definitions": {"message": MESSAGE}}
    if settings:
        document["x-gateway"] = settings
    return document


def test_the_longest_name_that_prefixes_a_topic_by_words_applies(tmp_path: Path) -> None:
    write(tmp_path, "chat", contract())
    write(tmp_path, "chat.room", contract(max_age="7D"))
    topics = TopicRegistry.from_directory(tmp_path)
    assert topics.for_topic("chat.room.42").name == "chat.room"
    assert topics.for_topic("chat.room").name == "chat.room"
    assert topics.for_topic("chat.roomy").name == "chat"  # words, not characters
    assert topics.for_topic("chat.lobby.1").name == "chat"
    with pytest.raises(NotFound):
        topics.for_topic("chatter")


@pytest.mark.parametrize("topic", ["chat.room.*", "chat.#", "chat..room", ".chat", "chat.", "a b"])
def test_a_malformed_topic_is_refused_before_amqp_sees_it(tmp_path: Path, topic: str) -> None:
    write(tmp_path, "chat", contract())
    with pytest.raises(BadRequest) as refused:
        TopicRegistry.from_directory(tmp_path).for_topic(topic)
    assert refused.value.code == "invalid_topic"


def test_retention_becomes_the_stream_arguments(tmp_path: Path) -> None:
    write(tmp_path, "prices.fx", contract(max_age=3600, max_bytes=8_000_000))
    write(tmp_path, "chat.room", contract())
    topics = TopicRegistry.from_directory(tmp_path)
    assert topics["prices.fx"].settings.stream_arguments() == {
        "x-queue-type": "stream",
        "x-max-age": "3600s",
        "x-max-length-bytes": 8_000_000,
        "x-stream-max-segment-size-bytes": 2_000_000,
    }
    assert topics["chat.room"].settings.stream_arguments()["x-max-age"] == "1D"


def test_messages_are_checked_with_the_details_operations_give(tmp_path: Path) -> None:
    write(tmp_path, "chat.room", contract())
    room = TopicRegistry.from_directory(tmp_path)["chat.room"]
    room.validate_message({"text": "hi"})
    with pytest.raises(InvalidRequest) as refused:
        room.validate_message({"text": 5})
    assert [d["path"] for d in refused.value.details] == ["/text"]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"definitions": {}}, "missing `definitions.message`"),
        (contract(max_age="a day"), "x-gateway/max_age"),
        (contract(retention_seconds=5), "x-gateway"),
        ({"definitions": {"message": {"type": "nonsense"}}}, "invalid JSON Schema"),
    ],
)
def test_a_broken_topic_contract_is_refused_with_its_reason(
    tmp_path: Path, document: object, reason: str
) -> None:
    write(tmp_path, "chat.room", document)
    with pytest.raises(ContractError, match=reason.replace("`", ".")):
        TopicRegistry.from_directory(tmp_path)


def test_no_folder_means_no_topics(tmp_path: Path) -> None:
    assert len(TopicRegistry.from_directory(tmp_path / "missing")) == 0
    assert len(TopicRegistry.from_directory(None)) == 0

"""Operation contracts: `schemas/ops/<op>.json`, loaded and compiled once at start-up.

Each file is a draft-07 JSON Schema whose `definitions` hold `request` (required),
`result` (required) and `progress` (optional); gateway settings live under `x-gateway`.

A contract may `$ref` shared definition files of the same folder (files or folders whose
name starts with `_`, e.g. `_shared/common.json`; they are not operations). Every `$ref`
is resolved at load time from the folder's own files and nothing else, and the shared
parts a contract uses are copied into its `definitions`: validating never fetches
anything, and the document served to clients is self-contained.

Checking a body is bounded work (at most `MAX_ERRORS_EXAMINED` errors are looked at), and
a large body is checked off the event loop, in one dedicated thread.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson
from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema_specifications import REGISTRY as SPECIFICATIONS  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.exceptions import PointerToNowhere, Unresolvable
from referencing.jsonschema import DRAFT7

from gateway.errors import ContractError, InvalidRequest
from gateway.types import JSON, JSONObject

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by `referencing`

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
OP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MAX_DETAILS = 20
MAX_ERRORS_EXAMINED = 100
"""Errors looked at per check: a body of 240k wrong items must not cost 240k errors."""
INLINE_CHECK_BYTES = 64 * 1024
"""Bodies up to this size (JSON bytes) are checked inline; larger ones in the thread."""

# One thread for large checks: several large bodies queue behind each other instead of
# multiplying GIL contention with the event loop.
_checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-contract-check")
_T = TypeVar("_T")

Durability = Literal["durable", "light"]

# What `x-gateway` may hold; anything else is a typo and stops start-up.
SETTINGS_SCHEMA: JSONObject = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "description": {"type": "string"},
        "durability": {"enum": ["durable", "light"]},
        "max_queue_length": {"type": "integer", "minimum": 1},
        "deadline_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 31622400},
        "lease_seconds": {"type": "number", "exclusiveMinimum": 0},
        "retention_seconds": {"type": "number", "exclusiveMinimum": 0},
    },
}
_settings_validator = Draft7Validator(SETTINGS_SCHEMA)


@dataclass(frozen=True, slots=True)
class OperationSettings:
    """The contract's `x-gateway` object with defaults filled in."""

    description: str = ""
    durability: Durability = "durable"
    max_queue_length: int = 100_000
    deadline_seconds: float | None = None
    """Default deadline of a job; a request may set its own (X-Deadline-Seconds)."""
    lease_seconds: float = 120.0
    """A running job whose worker is silent this long fails with `worker_lost`."""
    retention_seconds: float = 7 * 24 * 3600.0
    """Finished jobs are purged this long after they ended."""

    @classmethod
    def from_json(cls, raw: JSONObject) -> OperationSettings:
        return cls(**raw)

    def to_json(self) -> JSONObject:
        return {
            "description": self.description,
            "durability": self.durability,
            "max_queue_length": self.max_queue_length,
            "deadline_seconds": self.deadline_seconds,
            "lease_seconds": self.lease_seconds,
            "retention_seconds": self.retention_seconds,
        }


def json_pointer(path: Iterator[Any] | Any) -> str:
    """RFC 6901 pointer for a jsonschema error path."""
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in path)
    return "".join("/" + p for p in parts)


WEAK_KEYWORDS = frozenset({"anyOf", "oneOf"})
""""None of the alternatives matched": less telling than another error at the same place."""


def _segment_key(segment: str) -> tuple[int, int, str]:
    # Array indices (canonical non-negative integers) by number, so /items/2 comes before
    # /items/10; names by code point. The JS and Perl clients compare the same way.
    if segment.isascii() and segment.isdigit() and (segment == "0" or segment[0] != "0"):
        return (0, int(segment), "")
    return (1, 0, segment)


def detail_order(path: list[str], keyword: str) -> tuple[object, ...]:
    """The order of details, most relevant first, the same in every client: shallower
    paths first (a problem with the whole before one inside it), then document order
    (segment by segment, see `_segment_key`), then, at one place, anything before a weak
    keyword (`anyOf`, `oneOf`). Errors equal on all three keep the validator's order."""
    return (len(path), [_segment_key(p) for p in path], keyword in WEAK_KEYWORDS)


def validation_details(errors: Iterable[ValidationError]) -> list[JSONObject]:
    """The first `MAX_ERRORS_EXAMINED` errors (taken lazily: the rest are never computed),
    sorted by `detail_order`, at most `MAX_DETAILS` of them. A missing property is
    reported at the object's path, an unexpected one too (one detail per object)."""
    examined = list(itertools.islice(errors, MAX_ERRORS_EXAMINED))
    examined.sort(key=lambda e: detail_order([str(p) for p in e.absolute_path], str(e.validator)))
    return [
        {"path": json_pointer(e.absolute_path), "message": e.message}
        for e in examined[:MAX_DETAILS]
    ]


@dataclass(frozen=True, slots=True)
class Contract:
    op: str
    path: Path
    document: JSONObject
    settings: OperationSettings
    request: Draft7Validator
    result: Draft7Validator
    progress: Draft7Validator | None
    passes: Mapping[str, Draft7Validator] = field(default_factory=dict)
    """Per definition, a validator that accepts what the one above accepts, cheaper to
    ask whether a body passes (`passing_validator`); the errors of one that does not
    still come from the one above, so their details stay as they are."""

    def _details(self, definition: str, validator: Draft7Validator, body: JSON) -> list[JSONObject]:
        """The details of what is wrong with `body`; none if it passes."""
        passing = self.passes.get(definition, validator)
        if passing.is_valid(body):
            return []
        return validation_details(validator.iter_errors(body))

    def validate_request(self, body: JSON) -> None:
        details = self._details("request", self.request, body)
        if not details:
            return
        raise InvalidRequest(
            f"request does not match the contract of {self.op}: {details[0]['message']}",
            details=details,
        )

    def result_errors(self, result: JSON) -> list[JSONObject]:
        return self._details("result", self.result, result)

    def progress_errors(self, progress: JSON) -> list[JSONObject]:
        if self.progress is None:
            return []
        return self._details("progress", self.progress, progress)

    # The same checks for the event loop: `size` is the body's JSON size in bytes.

    async def check_request(self, body: JSON, size: int) -> None:
        """`validate_request`, off the event loop if the body is large."""
        await checked(lambda: self.validate_request(body), size)

    async def check_result(self, result: JSON, size: int) -> list[JSONObject]:
        """`result_errors`, off the event loop if the result is large."""
        return await checked(lambda: self.result_errors(result), size)

    async def check_progress(self, progress: JSON, size: int) -> list[JSONObject]:
        """`progress_errors`, off the event loop if the progress body is large."""
        return await checked(lambda: self.progress_errors(progress), size)


async def checked(check: Callable[[], _T], size: int) -> _T:
    """Run `check` inline for a small body (the hot path: no thread hop), else in the
    checking thread so the event loop keeps serving everyone else."""
    if size <= INLINE_CHECK_BYTES:
        return check()
    return await asyncio.get_running_loop().run_in_executor(_checker, check)


# Keywords that would change what the definition's `$ref`s mean if it became the root.
_ROOT_KEYWORDS = frozenset({"$ref", "$id", "$schema", "definitions"})


def passing_validator(
    document: JSONObject, definition: str, registry: Registry
) -> Draft7Validator | None:
    """The definition itself as the root, beside the document's `definitions` (so its
    `#/definitions/...` references mean what they meant): the same checks as
    `validator_for`'s without resolving its `$ref` on every body. (Resolving that was
    most of the cost of checking a small body.) None where that would change a meaning.
    """
    schema = document["definitions"][definition]
    if isinstance(schema, bool):
        return Draft7Validator(schema)
    if not isinstance(schema, dict) or _ROOT_KEYWORDS & schema.keys():
        return None
    if not all(_same_from_either_root(ref) for ref in _refs(schema)):
        return None
    return Draft7Validator({**schema, "definitions": document["definitions"]}, registry=registry)


def _same_from_either_root(ref: str) -> bool:
    """Whether a `$ref` means the same from the definition as root: not a pointer into
    the root other than to itself or to `definitions` (`#/properties/...` would now
    point into the definition)."""
    return (
        not ref.startswith("#") or ref in ("#", "#/definitions") or ref.startswith("#/definitions/")
    )


def _refs(node: JSON) -> Iterator[str]:
    """Every `$ref` string within a schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def validator_for(document: JSONObject, definition: str, registry: Registry) -> Draft7Validator:
    # A root that refers to one definition resolves the document's inner
    # `#/definitions/...` references exactly as clients' validators do.
    root: JSONObject = {
        "$ref": f"#/definitions/{definition}",
        "definitions": document["definitions"],
    }
    return Draft7Validator(root, registry=registry)


# -- references: the contract folder is the only source --------------------------------


def is_shared_file(relative: Path) -> bool:
    """Whether a file (path relative to the contracts folder) holds shared definitions
    rather than an operation: its name, or a folder on its way, starts with `_`."""
    return any(part.startswith("_") for part in relative.parts)


class RefusedReference(LookupError):
    """A `$ref` to something outside the contracts folder (never fetched)."""


def _refuse(uri: str) -> Resource[Any]:
    # The registry's fallback for URIs none of the folder's files has: nothing is
    # fetched, from the network or elsewhere.
    raise RefusedReference(uri)


# Draft-07 keywords whose values are subschemas: a single one, a list, or a map of them.
_ONE_SCHEMA = frozenset(
    {"additionalItems", "additionalProperties", "contains", "propertyNames", "if", "then"}
    | {"else", "not", "items"}
)
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "items"})
_SCHEMA_MAP = frozenset({"properties", "patternProperties", "definitions", "dependencies"})


class ContractFolder:
    """Every `*.json` under the contracts folder, parsed once, as one `referencing`
    registry: addressable by path relative to the file that refers to them, and by `$id`
    if they declare one. Nothing else resolves."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.documents: dict[Path, JSON] = {}
        self.locations: dict[int, tuple[Path, str]] = {}
        """id() of every object in the shared documents -> (file, JSON pointer), to name
        the definitions copied into a contract."""
        registry: Registry = Registry(retrieve=_refuse)  # type: ignore[call-arg]
        for path in sorted(directory.rglob("*.json")):
            where = str(path)
            try:
                document = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise ContractError(f"{where}: not valid JSON: {exc}") from exc
            relative = path.relative_to(directory)
            if is_shared_file(relative):
                check_schema_file(where, document, "shared definitions file")
            self.documents[path] = document
            if not isinstance(document, dict):
                continue  # no schema: a contract says so when loaded
            self._locate(document, relative, "")
            registry = registry.with_resource(self.uri(path), DRAFT7.create_resource(document))
        self.registry: Registry = registry.crawl()

    def uri(self, path: Path) -> str:
        return path.resolve().as_uri()

    def _locate(self, node: JSON, relative: Path, pointer: str) -> None:
        if isinstance(node, dict):
            self.locations[id(node)] = (relative, pointer)
            for key, value in node.items():
                self._locate(value, relative, f"{pointer}/{json_pointer([key])[1:]}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                self._locate(value, relative, f"{pointer}/{index}")

    def bundle(self, path: Path, definitions: JSONObject) -> JSONObject:
        """The contract's `definitions` with every `$ref` checked, and what it refers to
        in other files copied in (under `_`-names): self-contained, as clients fetch it.
        Raises `ContractError` naming the file and the reference that does not resolve."""
        uri = self.uri(path)
        # The contract resolves `#...` against its definitions, as its validators do.
        view = DRAFT7.create_resource({"definitions": definitions})
        registry = SPECIFICATIONS.combine(self.registry.with_resource(uri, view))
        return _Bundler(self, str(path), set(definitions)).bundle(
            definitions, registry.resolver(base_uri=uri)
        )


def check_schema_file(where: str, document: JSON, kind: str) -> JSONObject:
    """`document`, if it is a draft-07 JSON Schema object; `kind` says what it should be
    ("contract", "shared definitions file")."""
    if not isinstance(document, dict):
        raise ContractError(f"{where}: a {kind} is a JSON object")
    declared = document.get("$schema", DRAFT_07)
    if not isinstance(declared, str) or declared.rstrip("#") != DRAFT_07.rstrip("#"):
        raise ContractError(f"{where}: a {kind} is draft-07 JSON Schema, not {declared}")
    try:
        Draft7Validator.check_schema(document)
    except SchemaError as exc:
        raise ContractError(
            f"{where}: invalid JSON Schema at {json_pointer(exc.path)}: {exc.message}"
        ) from exc
    return document


class _Bundler:
    """One contract's walk over its references (see `ContractFolder.bundle`)."""

    def __init__(self, folder: ContractFolder, where: str, taken: set[str]) -> None:
        self.folder = folder
        self.where = where
        self.taken = taken
        self.names: dict[object, str] = {}
        self.copied: JSONObject = {}

    def bundle(self, definitions: JSONObject, resolver: Resolver[Any]) -> JSONObject:
        own = {name: self._schema(s, resolver, None) for name, s in definitions.items()}
        if not self.copied:
            return definitions  # nothing from other files: served exactly as written
        return {**own, **self.copied}

    def _schema(self, node: JSON, resolver: Resolver[Any], copying: Path | None) -> JSON:
        """`node` with its references checked and rewritten; `copying`: the other file
        it is copied from (None: the contract's own)."""
        if not isinstance(node, dict):
            return node
        if DRAFT7.id_of(node) is not None:
            resolver = resolver.in_subresource(DRAFT7.create_resource(node))
        out: JSONObject = {}
        for key, value in node.items():
            if copying is not None and key in ("$id", "$schema"):
                continue  # a copy lives in the contract's document, with its base
            if key == "$ref" and isinstance(value, str):
                out[key] = self._ref(value, resolver, copying)
            elif key in _SCHEMA_LIST and isinstance(value, list):
                out[key] = [self._schema(v, resolver, copying) for v in value]
            elif key in _ONE_SCHEMA:
                out[key] = self._schema(value, resolver, copying)
            elif key in _SCHEMA_MAP and isinstance(value, dict):
                out[key] = {k: self._schema(v, resolver, copying) for k, v in value.items()}
            else:
                out[key] = value
        return out

    def _ref(self, ref: str, resolver: Resolver[Any], copying: Path | None) -> str:
        try:
            resolved = resolver.lookup(ref)
        except Unresolvable as exc:
            inside = f" (in {copying})" if copying is not None else ""
            raise ContractError(
                f"{self.where}: $ref {ref!r}{inside} does not resolve: {self._why(exc)}"
            ) from None
        target = resolved.contents
        if copying is None and ref.startswith("#"):
            return ref  # the contract's own definitions: resolved the same way when served
        key: object = ("boolean", target) if isinstance(target, bool) else id(target)
        name = self.names.get(key)
        if name is not None:
            return f"#/definitions/{name}"
        location = self.folder.locations.get(id(target))
        if location is None and not isinstance(target, bool):
            return ref  # a metaschema jsonschema (and every client) has built in
        name = self._new_name(location)
        self.names[key] = name
        self.copied[name] = {}  # taken before the walk: a recursive schema ends here
        source = location[0] if location is not None else Path()
        self.copied[name] = self._schema(target, resolved.resolver, source)
        return f"#/definitions/{name}"

    def _new_name(self, location: tuple[Path, str] | None) -> str:
        if location is None:
            stem = "_boolean"
        else:
            relative, pointer = location
            raw = f"{relative.with_suffix('').as_posix()}{pointer}"
            stem = "_" + re.sub(r"[^A-Za-z0-9_-]+", ".", raw).strip("._")
        name, n = stem, 1
        while name in self.taken:
            n += 1
            name = f"{stem}.{n}"
        self.taken.add(name)
        return name

    def _why(self, exc: Unresolvable) -> str:
        if isinstance(exc, PointerToNowhere):
            return "no such location in the document it names"
        # `lookup` wraps the registry's failure, which holds the absolute URI.
        uri = str(getattr(exc.__cause__, "ref", ""))
        if uri.startswith(self.folder.uri(self.folder.directory) + "/"):
            return "no such file in the contracts folder"
        return "only files of the contracts folder can be referenced (nothing is fetched)"


def read_contract_file(
    path: Path,
    folder: ContractFolder,
    kind: str,
    required: tuple[str, ...],
    settings_validator: Draft7Validator,
) -> tuple[JSONObject, JSONObject]:
    """A contract file's document, its `definitions` bundled (`ContractFolder.bundle`),
    and its raw `x-gateway`; `ContractError` naming what is wrong. `kind` says what it
    is ("contract", "topic contract"), `required` which definitions it must have."""
    where = str(path)
    document = check_schema_file(where, folder.documents[path], kind)
    definitions = document.get("definitions")
    if not isinstance(definitions, dict):
        raise ContractError(f"{where}: missing `definitions`")
    for name in required:
        if name not in definitions:
            raise ContractError(f"{where}: missing `definitions.{name}`")
    raw_settings = document.get("x-gateway", {})
    settings_error = best_match(settings_validator.iter_errors(raw_settings))
    if settings_error is not None:
        raise ContractError(
            f"{where}: x-gateway{json_pointer(settings_error.absolute_path)}: "
            f"{settings_error.message}"
        )
    bundled = folder.bundle(path, definitions)
    if bundled is not definitions:
        document = {**document, "definitions": bundled}
    return document, raw_settings


def load_contract(path: Path, folder: ContractFolder | None = None) -> Contract:
    """One operation's contract; `folder` holds the files its `$ref`s may name (by
    default the contract's own folder)."""
    op = path.name.removesuffix(".json")
    where = str(path)
    if not OP_NAME.match(op) or op.startswith("amq."):
        raise ContractError(f"{where}: {op!r} is not a valid operation name")
    if folder is None:
        folder = ContractFolder(path.parent)
    document, raw_settings = read_contract_file(
        path, folder, "contract", ("request", "result"), _settings_validator
    )
    definitions = document["definitions"]
    registry = folder.registry
    try:
        return Contract(
            op=op,
            path=path,
            document=document,
            settings=OperationSettings.from_json(raw_settings),
            request=validator_for(document, "request", registry),
            result=validator_for(document, "result", registry),
            progress=(
                validator_for(document, "progress", registry) if "progress" in definitions else None
            ),
            passes={
                definition: passing
                for definition in ("request", "result", "progress")
                if definition in definitions
                and (passing := passing_validator(document, definition, registry)) is not None
            },
        )
    except Exception as exc:  # e.g. an unresolvable $ref found while compiling
        raise ContractError(f"{where}: {exc}") from exc


class ContractRegistry(Mapping[str, Contract]):
    """All operations, by name."""

    def __init__(self, contracts: list[Contract]) -> None:
        self._by_op = {c.op: c for c in sorted(contracts, key=lambda c: c.op)}

    @classmethod
    def from_directory(cls, directory: Path | str) -> ContractRegistry:
        directory = Path(directory)
        if not directory.is_dir():
            raise ContractError(f"{directory}: contracts directory not found")
        folder = ContractFolder(directory)
        # Top-level `<op>.json` files are operations; `_`-named ones hold shared parts.
        ops = sorted(p for p in directory.glob("*.json") if not is_shared_file(Path(p.name)))
        contracts = [load_contract(p, folder) for p in ops]
        if not contracts:
            raise ContractError(f"{directory}: no contracts (<op>.json files) found")
        return cls(contracts)

    def __getitem__(self, op: str) -> Contract:
        return self._by_op[op]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_op)

    def __len__(self) -> int:
        return len(self._by_op)

"""TypeScript types of the realtime protocol, from the AsyncAPI document (the same models).

``rtkit asyncapi --format typescript`` writes one module: an interface per payload
and ack, and socket.io-client's two event maps, so that a TypeScript client checks
every emit, ack and handler against the server's models:

```ts
import { io, Socket } from "socket.io-client";
import type { ClientToServerEvents, ServerToClientEvents } from "./rtkit-chat";

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, { auth });
```
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._asyncapi import CLIENT_EVENTS, SERVER_EVENTS, asyncapi_document

__all__ = ["typescript_module"]

_HEADER = """\
// The realtime protocol of rtkit's RealtimeServer, generated from its pydantic models by
// `rtkit asyncapi --format typescript` (rtkit {version}): do not edit.

/** Any JSON value. */
export type JsonValue =
  string | number | boolean | null | JsonValue[] | {{ [key: string]: JsonValue }};
"""


class _Writer:
    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self.schemas = schemas
        self.named: dict[str, str] = {}  # type name -> declaration

    def type_of(self, schema: Mapping[str, Any]) -> str:
        """The TypeScript type of a JSON schema (a named interface for titled objects)."""
        if "$ref" in schema:
            return self.ref(schema["$ref"].rsplit("/", 1)[1])
        if "const" in schema:
            return json.dumps(schema["const"])
        if "enum" in schema:
            return " | ".join(json.dumps(value) for value in schema["enum"])
        for union in ("anyOf", "oneOf"):
            if union in schema:
                return " | ".join(self.type_of(part) for part in schema[union])
        kind = schema.get("type")
        if kind == "object" and "properties" in schema and "title" in schema:
            return self.declare(schema["title"], schema)
        if kind == "object":
            return self.object_of(schema)
        if kind == "array":
            return f"Array<{self.type_of(schema.get('items', {}))}>"
        simple = {"string": "string", "integer": "number", "number": "number"}
        simple |= {"boolean": "boolean", "null": "null"}
        return simple.get(kind, "JsonValue") if isinstance(kind, str) else "JsonValue"

    def ref(self, name: str) -> str:
        if name == "JsonValue":
            return name
        schema = self.schemas[name]
        if schema.get("type") == "object" and "properties" in schema:
            return self.declare(name, schema)
        if name not in self.named:
            self.named[name] = ""  # (recursion guard)
            self.named[name] = f"export type {name} = {self.type_of(schema)};\n"
        return name

    def object_of(self, schema: Mapping[str, Any]) -> str:
        required = set(schema.get("required", ()))
        fields = [
            f"  {json.dumps(name)}{'' if name in required else '?'}: {self.type_of(value)};"
            for name, value in schema.get("properties", {}).items()
        ]
        return "{\n" + "\n".join(fields) + "\n}" if fields else "{ [key: string]: JsonValue }"

    def declare(self, name: str, schema: Mapping[str, Any]) -> str:
        if name not in self.named:
            self.named[name] = ""  # (recursion guard)
            doc = " ".join(str(schema.get("description", "")).replace("``", "`").split())
            comment = f"/** {doc} */\n" if doc else ""
            self.named[name] = f"{comment}export interface {name} {self.object_of(schema)}\n"
        return name


def typescript_module(version: str | None = None) -> str:
    """The protocol's TypeScript module (see the module docs)."""
    document = asyncapi_document(version=version)
    messages = document["channels"]["socketio"]["messages"]
    writer = _Writer(document["components"]["schemas"])
    client: list[str] = []
    for event in CLIENT_EVENTS:
        key = _camel(event)
        payload = writer.type_of(messages[f"{key}In"]["payload"])
        ack = writer.type_of(messages[f"{key}Ack"]["payload"])
        client.append(
            f"  {json.dumps(event)}: (payload: {payload}, "
            f"ack?: (reply: {ack} | ErrorAck) => void) => void;"
        )
    writer.type_of(messages["errorAck"]["payload"])
    server = []
    for event in SERVER_EVENTS:
        payload = writer.type_of(messages[f"{_camel(event)}Out"]["payload"])
        server.append(f"  {json.dumps(event)}: (payload: {payload}, offset?: string) => void;")
    parts = [_HEADER.format(version=document["info"]["version"])]
    parts += [declaration for declaration in writer.named.values() if declaration]
    parts.append(
        "/** What a client emits: each event with its payload and, if asked for, its ack. */\n"
        "export interface ClientToServerEvents {\n" + "\n".join(client) + "\n}\n"
    )
    parts.append(
        "/** What the server emits to a client (`offset`: the event's recovery offset,\n"
        " * present when the server keeps sessions for connection state recovery). */\n"
        "export interface ServerToClientEvents {\n" + "\n".join(server) + "\n}\n"
    )
    return "\n".join(parts)


def _camel(event: str) -> str:
    words = event.replace(":", " ").split()
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])

"""What the AsyncAPI documents share: schemas from pydantic, and JSON or YAML text.

The realtime protocol (``rtkit.realtime.asyncapi_document``) and a
``RabbitMQService``'s topology (``RabbitMQService.asyncapi``) are described as
AsyncAPI 3.0 documents; their payload schemas come from the pydantic models on
the wire, their shared definitions moved under ``components/schemas``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import pydantic

__all__ = ["ASYNCAPI_VERSION", "SchemaBook", "dump", "to_yaml"]

ASYNCAPI_VERSION = "3.0.0"

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})


class SchemaBook:
    """JSON schemas of pydantic models and types, sharing one ``components/schemas``."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def schema(
        self, model: Any, mode: Literal["validation", "serialization"] = "serialization"
    ) -> dict[str, Any]:
        """The JSON schema of ``model`` (field names as on the wire), its ``$defs`` moved out."""
        adapter = model if isinstance(model, pydantic.TypeAdapter) else pydantic.TypeAdapter(model)
        found: dict[str, Any] = adapter.json_schema(
            by_alias=True, mode=mode, ref_template="#/components/schemas/{model}"
        )
        for name, definition in found.pop("$defs", {}).items():
            self.schemas.setdefault(name, definition)
        return found

    def named(
        self,
        name: str,
        model: Any,
        mode: Literal["validation", "serialization"] = "serialization",
    ) -> dict[str, str]:
        """A ``$ref`` to ``model``'s schema, kept in ``components/schemas`` as ``name``."""
        self.schemas.setdefault(name, self.schema(model, mode))
        return {"$ref": f"#/components/schemas/{name}"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    return json.dumps(str(value))  # a JSON string is a YAML double-quoted scalar


def _key(key: str) -> str:
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in _YAML_WORDS:
        return key
    return json.dumps(key)


def _lines(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list) and item:
                out.append(f"{pad}{_key(str(key))}:")
                _lines(item, indent + 2, out)
            else:
                out.append(f"{pad}{_key(str(key))}: {_inline(item)}")
    else:
        for item in value:
            if isinstance(item, Mapping | list) and item:
                nested: list[str] = []
                _lines(item, indent + 2, nested)
                out.append(f"{pad}- {nested[0].lstrip()}")
                out.extend(nested[1:])
            else:
                out.append(f"{pad}- {_inline(item)}")


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def to_yaml(document: Mapping[str, Any]) -> str:
    """``document`` (JSON data) as block-style YAML that reads back to the same data."""
    out: list[str] = []
    _lines(document, 0, out)
    return "\n".join(out) + "\n"


def dump(document: Mapping[str, Any], format: str = "json") -> str:
    """``document`` as ``json`` (indented) or ``yaml`` text."""
    if format == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if format == "yaml":
        return to_yaml(document)
    raise ValueError(f"format must be 'json' or 'yaml', not {format!r}")

"""A read-only client of a Confluent-compatible schema registry, with an in-process cache."""

from __future__ import annotations

import json
from typing import Any, cast

import aiohttp
from fastavro import parse_schema

from streams.contracts.codecs import DecodeError


class SchemaRegistry:
    """Fetches writer schemas by id (GET /schemas/ids/{id}) and keeps them for the process."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._schemas: dict[int, dict[str, Any]] = {}

    def cached(self, schema_id: int) -> dict[str, Any] | None:
        return self._schemas.get(schema_id)

    async def fetch(self, schema_id: int) -> dict[str, Any]:
        """Fetch, parse and cache one schema; DecodeError when the registry cannot give it."""
        if schema_id in self._schemas:
            return self._schemas[schema_id]
        address = f"{self.url}/schemas/ids/{schema_id}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.get(address) as response,
            ):
                if response.status == 404:
                    raise DecodeError(f"schema id {schema_id} is unknown to the schema registry")
                if response.status != 200:
                    raise ConnectionError(f"schema registry answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ConnectionError(f"schema registry unreachable: {type(error).__name__}") from None
        try:
            schema_text = body["schema"]
            parsed = cast(dict[str, Any], parse_schema(json.loads(schema_text), _write_hint=False))
        except (KeyError, TypeError, ValueError) as error:
            raise DecodeError(
                f"schema id {schema_id} from the registry is not a valid Avro schema "
                f"({type(error).__name__})"
            ) from None
        if parsed.get("type") != "record":
            raise DecodeError(f"schema id {schema_id} from the registry is not a record schema")
        self._schemas[schema_id] = parsed
        return parsed

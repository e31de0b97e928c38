"""Calling an EntityType's HTTP command handler (`handler: {http: {url}}`)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from kurable.store.entities import AskHandler, HandlerUnavailable

HANDLER_TIMEOUT = 30.0


def http_handler(session: aiohttp.ClientSession | None = None) -> AskHandler:
    """An `ask` for execute_command: POST `{state, command, input, version}` as JSON with
    `Idempotency-Key: <command id>`; a 2xx answer is `{events, reply}` or `{error}`.

    A 4xx is the handler refusing the command (recorded like any rejection); no answer,
    a timeout or a 5xx decides nothing (HandlerUnavailable: retry later)."""

    async def ask(url: str, payload: dict[str, Any], command_id: str) -> Any:
        if session is None:
            async with aiohttp.ClientSession() as own:
                return await _post(own, url, payload, command_id)
        return await _post(session, url, payload, command_id)

    return ask


async def _post(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], command_id: str
) -> Any:
    try:
        async with session.post(
            url,
            json=payload,
            headers={"Idempotency-Key": command_id},
            timeout=aiohttp.ClientTimeout(total=HANDLER_TIMEOUT),
        ) as response:
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as e:
        raise HandlerUnavailable(f"handler {url}: {e or type(e).__name__}") from None
    if status >= 500 or status == 429:
        raise HandlerUnavailable(f"handler {url} answered {status}: {text[:200]}")
    if status >= 400:
        return {"error": f"{status}: {text[:200]}"}
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"error": f"the answer is not JSON: {text[:200]}"}

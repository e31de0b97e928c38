"""A real headless Chromium (Debian's, installed by hack/chromium.sh) driven over the
DevTools protocol on a websocket: navigate, evaluate, wait for a condition, screenshot,
and collect every console error and uncaught exception of the page."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import ROOT

LAUNCH_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def chromium_binary() -> str:
    """The path of the Chromium the project's script installed (cached by version)."""
    done = subprocess.run(
        [str(ROOT / "hack" / "chromium.sh")], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def artifacts_dir() -> Path:
    """Where screenshots go: $KURABLE_ARTIFACTS, else tests/artifacts (gitignored)."""
    path = Path(os.environ.get("KURABLE_ARTIFACTS") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _launch(log: Path, profile: Path) -> subprocess.Popen[bytes]:
    """Chromium with a fresh profile, its DevTools on a free port (written to `log`)."""
    return subprocess.Popen(
        [
            chromium_binary(),
            *LAUNCH_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),
        start_new_session=True,  # its own process group: its helpers end with it
    )


class Browser:
    """One headless Chromium with one page; use inside `async with`."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        """Console errors and uncaught exceptions, in order."""
        self._profile = tempfile.TemporaryDirectory(prefix="kurable-chromium-")
        self._process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Browser:
        log = Path(self._profile.name) / "chromium.log"
        self._process = _launch(log, Path(self._profile.name) / "profile")
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", log.read_text())
            if found:
                port = int(found.group(1))
            elif time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"chromium did not start:\n{log.read_text()[-3000:]}")
            else:
                await asyncio.sleep(0.1)
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as reply:
            targets = await reply.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            # The browser's helper processes (renderer, zygote, crashpad) write to the
            # profile too: end the whole group, then wait until no member is left.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(self._process.pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.05)
        self._profile.cleanup()

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            method, params = data.get("method"), data.get("params") or {}
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                self.errors.append("console: " + " ".join(texts))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = (details.get("exception") or {}).get("description") or details.get("text")
                self.errors.append(f"exception: {text}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command; its result (RuntimeError for a protocol error)."""
        assert self._ws is not None
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        await self._ws.send_str(
            json.dumps({"id": self._next_id, "method": method, "params": params or {}})
        )
        answer = await asyncio.wait_for(future, 60)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result") or {}
        return result

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 30.0, what: str = "") -> Any:
        """Poll `expression` until it is truthy (for up to `seconds`); its value."""
        deadline = time.monotonic() + seconds
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}; last: {value!r}")
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

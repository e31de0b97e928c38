"""Running the endpoint on uvicorn."""

from __future__ import annotations

import uvicorn

from ._app import create_app
from ._settings import EndpointSettings


def serve(settings: EndpointSettings, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM (uvicorn stops gracefully: open requests finish)."""
    host, port = settings.host_port()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=True,
        # httptools (C) parses requests with less CPU than h11; asyncio's own loop, since
        # aetcd's grpc.aio is not made for uvloop.
        http="httptools",
        loop="asyncio",
        # The endpoint answers problem+json for everything, and sets no server header.
        server_header=False,
        # One loop, one process: replicas scale out (the endpoint is stateless).
        workers=None,
    )

"""The endpoint: Kurable's HTTP API, the one door for applications, the CLI and the client.

`create_app(settings)` is the ASGI application (FastAPI; the OpenAPI document at
`/openapi.json`, interactive docs at `/docs`); `serve(settings)` runs it on uvicorn
(`kurable endpoint`). Every request under `/v1/` carries a bearer token checked by a
TokenReview and is authorised by a SubjectAccessReview on `kurable.dev` resources
(`kurable.endpoint._access` has the table); errors are RFC 9457 problem details.
"""

from kurable.endpoint._app import create_app
from kurable.endpoint._serve import serve
from kurable.endpoint._settings import EndpointSettings

__all__ = ["EndpointSettings", "create_app", "serve"]

"""Authentication (TokenReview) and authorisation (SubjectAccessReview) by the API server.

The endpoint holds no user database and no policy: a request's bearer token is checked
by the API server (the identity a user has with kubectl: a ServiceAccount token, an OIDC
token, whatever the cluster's authenticators accept), and each request's resource
attributes (`_access`) are checked for that identity with a SubjectAccessReview, so
ordinary Roles decide.

TokenReview answers are cached for `token_ttl` seconds, keyed by the SHA-256 of the
token (the token itself is never kept); a revoked token therefore works at most that
long after its revocation.

Allowed access decisions are cached for `access_ttl` seconds (default 10), keyed by all
the SubjectAccessReview's attributes (user, uid, groups, extra; verb, resource,
subresource, namespace, name), so a sender repeating one request pays one review per
TTL instead of one per request. This is what kube-apiserver's own webhook authorizer
does (`--authorization-webhook-cache-authorized-ttl`, default 5 minutes;
`--authorization-webhook-cache-unauthorized-ttl`, default 30 seconds): a removed
RoleBinding still allows at most `access_ttl` seconds. Denials are not cached, so a
Role granted takes effect at the next request.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import aiohttp
from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import GROUP
from kurable.executor.errors import api_error_message

from ._access import Access
from ._problems import Problem

DEFAULT_TOKEN_TTL = 10.0
"""Seconds a TokenReview answer is reused (kube-apiserver's own webhook token cache
defaults to 2 minutes; 10 s keeps a revocation quick while sparing the API server)."""
TOKEN_CACHE_SIZE = 10_000
"""Cached token answers at most (the oldest go first)."""
DEFAULT_ACCESS_TTL = 10.0
"""Seconds an allowed SubjectAccessReview answer is reused (kube-apiserver's webhook
authorizer: 5 minutes for allowed answers; 10 s keeps a revoked Role short-lived)."""
ACCESS_CACHE_SIZE = 10_000
"""Cached allowed decisions at most (the oldest go first)."""
RETRY_AFTER_SECONDS = 2
"""Retry-After when the API server cannot answer."""

ANONYMOUS_USER = "system:anonymous"


@dataclass(frozen=True)
class Identity:
    """Who sent a request, as the API server's TokenReview says."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def anonymous(cls) -> Identity:
        return cls(ANONYMOUS_USER, groups=("system:unauthenticated",))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, None when absent or empty."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_key(token: str) -> str:
    """What the cache keys a token by: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenCache:
    """Answers by token hash, each for `ttl` seconds (monotonic clock), at most `size`."""

    def __init__(self, ttl: float = DEFAULT_TOKEN_TTL, size: int = TOKEN_CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Identity | None]] = OrderedDict()

    def get(self, key: str, now: float) -> tuple[bool, Identity | None]:
        """(found, identity); identity None: the token was refused."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            self._entries.pop(key, None)
            return False, None
        return True, entry[1]

    def put(self, key: str, identity: Identity | None, now: float) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (now + self.ttl, identity)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


AccessKey = tuple[str, str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...], Access]


def access_key(identity: Identity, access: Access) -> AccessKey:
    """Every attribute a SubjectAccessReview asks about: equal keys, equal answers."""
    extra = tuple(sorted((k, tuple(v)) for k, v in identity.extra.items()))
    return (identity.username, identity.uid, identity.groups, extra, access)


class AccessCache:
    """Allowed decisions by `access_key`, each for `ttl` seconds (monotonic), at most `size`."""

    def __init__(self, ttl: float = DEFAULT_ACCESS_TTL, size: int = ACCESS_CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._until: OrderedDict[AccessKey, float] = OrderedDict()

    def allowed(self, key: AccessKey, now: float) -> bool:
        """True when `key` was allowed less than `ttl` seconds ago."""
        until = self._until.get(key)
        if until is None:
            return False
        if until <= now:
            del self._until[key]
            return False
        return True

    def allow(self, key: AccessKey, now: float) -> None:
        if self.ttl <= 0:
            return
        self._until[key] = now + self.ttl
        self._until.move_to_end(key)
        while len(self._until) > self.size:
            self._until.popitem(last=False)


def unavailable(what: str, error: BaseException) -> Problem:
    """503 + Retry-After for a backing service that did not answer."""
    text = api_error_message(error) if isinstance(error, k8s.ApiException) else str(error)
    return Problem(
        503,
        "unavailable",
        f"{what} did not answer ({text or type(error).__name__}); nothing was done, try again",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


API_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)
"""What a Kubernetes client call raises when the API server is unreachable."""


class Gatekeeper:
    """Authenticates tokens and authorises requests against one API server."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        access_ttl: float = DEFAULT_ACCESS_TTL,
        allow_anonymous: bool = False,
        audiences: tuple[str, ...] = (),
    ) -> None:
        self.api = api
        self.cache = TokenCache(token_ttl)
        self.decisions = AccessCache(access_ttl)
        self.allow_anonymous = allow_anonymous
        self.audiences = audiences
        self._pending: dict[str, asyncio.Future[Identity | None]] = {}

    async def authenticate(self, authorization: str | None) -> Identity:
        """The identity of the request's bearer token; raises Problem 401 without a token
        (unless anonymous access is allowed) or for a token the API server refuses."""
        token = bearer_token(authorization)
        if token is None:
            if self.allow_anonymous:
                return Identity.anonymous()
            raise Problem(
                401,
                "unauthenticated",
                "send a bearer token: `Authorization: Bearer <token>` (e.g. from "
                "`kubectl create token <serviceaccount>`)",
                headers={"WWW-Authenticate": 'Bearer realm="kurable"'},
            )
        key = token_key(token)
        found, identity = self.cache.get(key, time.monotonic())
        if not found:
            identity = await self._review_once(key, token)
        if identity is None:
            raise Problem(
                401,
                "unauthenticated",
                "the API server does not accept this token (expired, revoked or forged); "
                "get a new one",
                headers={"WWW-Authenticate": 'Bearer realm="kurable", error="invalid_token"'},
            )
        return identity

    async def _review_once(self, key: str, token: str) -> Identity | None:
        # Concurrent requests with the same new token share one TokenReview.
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Identity | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            identity = await self._review(token)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._pending[key]
        future.set_result(identity)
        self.cache.put(key, identity, time.monotonic())
        return identity

    async def _review(self, token: str) -> Identity | None:
        body = k8s.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=k8s.V1TokenReviewSpec(token=token, audiences=list(self.audiences) or None),
        )
        try:
            review = await k8s.AuthenticationV1Api(self.api).create_token_review(body)
        except k8s.ApiException as e:
            if e.status in (401, 403) or e.status >= 500:
                raise unavailable("the API server (TokenReview)", e) from None
            raise
        except API_ERRORS as e:
            raise unavailable("the API server (TokenReview)", e) from None
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        return Identity(
            username=user.username or "",
            uid=user.uid or "",
            groups=tuple(user.groups or ()),
            extra={k: list(v) for k, v in (user.extra or {}).items()},
        )

    async def authorize(self, identity: Identity, access: Access) -> None:
        """Ask the API server whether `identity` may do `access`; raises Problem 403 when
        not (its detail names the verb, resource and namespace, and the API server's
        reason when it gives one). An allowed answer is reused for `access_ttl` seconds."""
        key = access_key(identity, access)
        if self.decisions.allowed(key, time.monotonic()):
            return
        body = k8s.V1SubjectAccessReview(
            api_version="authorization.k8s.io/v1",
            kind="SubjectAccessReview",
            spec=k8s.V1SubjectAccessReviewSpec(
                user=identity.username,
                uid=identity.uid or None,
                groups=list(identity.groups),
                extra=identity.extra or None,
                resource_attributes=k8s.V1ResourceAttributes(
                    group=GROUP,
                    verb=access.verb,
                    resource=access.resource,
                    subresource=access.subresource or None,
                    namespace=access.namespace,
                    name=access.name or None,
                ),
            ),
        )
        try:
            review = await k8s.AuthorizationV1Api(self.api).create_subject_access_review(body)
        except k8s.ApiException as e:
            if e.status in (401, 403) or e.status >= 500:
                raise unavailable("the API server (SubjectAccessReview)", e) from None
            raise
        except API_ERRORS as e:
            raise unavailable("the API server (SubjectAccessReview)", e) from None
        status = review.status
        if status is not None and status.allowed and not status.denied:
            self.decisions.allow(key, time.monotonic())
            return
        reason = (status.reason or "").strip() if status is not None else ""
        raise Problem(
            403,
            "forbidden",
            f'user "{identity.username}" may not {access.describe()}'
            + (f" ({reason})" if reason else "")
            + "; ask for a Role that grants it",
            extra={
                "verb": access.verb,
                "resource": access.resource
                + (f"/{access.subresource}" if access.subresource else ""),
                "namespace": access.namespace,
                **({"name": access.name} if access.name else {}),
            },
        )

"""`kurable endpoint`: the HTTP API on uvicorn."""

from __future__ import annotations

import argparse
from pathlib import Path

from kurable.endpoint import EndpointSettings, serve
from kurable.executor.settings import default_state_dir

from ._errors import UserError
from ._etcd import etcd_config


def settings(args: argparse.Namespace) -> EndpointSettings:
    """The endpoint's settings from its flags, else the environment, else the defaults."""
    made = EndpointSettings(
        bind=args.bind,
        etcd=etcd_config(args),
        max_body_bytes=args.max_body_bytes,
        max_value_bytes=args.max_value_bytes,
        token_ttl=args.token_cache_seconds,
        access_ttl=args.access_cache_seconds,
        allow_anonymous=args.allow_anonymous,
        api_timeout=args.api_timeout,
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
    )
    try:
        made.host_port()
    except ValueError as e:
        raise UserError(str(e)) from None
    if made.max_body_bytes < 0:
        raise UserError(f"--max-body-bytes must be >= 0, got {made.max_body_bytes}")
    return made


def run(args: argparse.Namespace) -> int:
    serve(settings(args), log_level="debug" if args.verbose else "info")
    return 0

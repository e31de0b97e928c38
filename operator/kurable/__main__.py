"""`python -m kurable` is the `kurable` command."""

from kurable.cli import main

raise SystemExit(main())

"""kopf handlers: importing this package registers them (see `kurable operator`)."""

from __future__ import annotations

from . import entity as _entity  # noqa: F401
from . import entitytype as _entitytype  # noqa: F401
from . import operator as _operator  # noqa: F401  (startup, settings, cleanup, liveness probe)
from . import workflow as _workflow  # noqa: F401
from . import workflowtemplate as _workflowtemplate  # noqa: F401

"""kopf handlers: importing this package registers them (see `kurable operator`)."""

from __future__ import annotations

from . import consumer as _consumer  # noqa: F401
from . import entity as _entity  # noqa: F401
from . import entitytype as _entitytype  # noqa: F401
from . import operator as _operator  # noqa: F401  (startup, settings, cleanup, liveness probe)
from . import schedule as _schedule  # noqa: F401
from . import topic as _topic  # noqa: F401
from . import view as _view  # noqa: F401
from . import workflow as _workflow  # noqa: F401
from . import workflowtemplate as _workflowtemplate  # noqa: F401

"""The `emit` step: publish {topic, key, data} to a Topic, exactly once: the message id is
the attempt's idempotency key, so a step executed again after a crash publishes nothing
new (kurable.store.topics)."""

from __future__ import annotations

from typing import Any

from kurable.api.v1alpha1 import TOPIC
from kurable.engine import expressions
from kurable.engine.decide import Act, StepError

from ..runtime import Runtime
from ..topics import InvalidMessage, MessageConflict, TopicNotFound, publish_message
from .outcome import Outcome, RunRef


async def perform(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    """Publish; the output is {id, offset, duplicate}."""
    spec = act.step.emit
    assert spec is not None
    where = f"{act.step.name}.emit"
    key = expressions.render(spec.key, context, f"{where}.key") if spec.key else run.name
    data = expressions.render(spec.data, context, f"{where}.data")
    topic = await runtime.get(TOPIC, run.namespace, spec.topic)
    try:
        published = await publish_message(
            runtime.etcd,
            runtime.prefix,
            topic,
            namespace=run.namespace,
            name=spec.topic,
            id=act.idempotency_key(run.uid),
            key=str(key),
            data=data,
            type=act.step.name,
            source=f"/namespaces/{run.namespace}/workflows/{run.name}",
        )
    except TopicNotFound as e:
        return None, StepError("TopicNotFound", f"{where}: {e}")
    except InvalidMessage as e:
        return None, StepError("InvalidMessage", f"{where}: {e}", retryable=False)
    except MessageConflict as e:
        return None, StepError("MessageConflict", f"{where}: {e}", retryable=False)
    return {"id": published.id, "offset": published.offset, "duplicate": published.duplicate}, None

"""`Workflow`: one run of a durable process, and the step language it is written in."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from ._base import (
    Conditions,
    Duration,
    Expression,
    JSONObject,
    JSONValue,
    Model,
    Name,
    ObjectRef,
    cel,
    validations,
)

# The step kinds; a step has exactly one. Keep in sync with the fields of `Step`.
ACTIONS = ("set", "sleep", "wait", "http", "workflow", "entity", "view", "emit", "job", "parallel")

# A signal arrives as the annotation `kurable.dev/signal.NAME`. Kubernetes limits an
# annotation key's name part (`signal.NAME`) to 63 characters, alphanumeric at both ends
# with `-`, `_`, `.` inside; a wait step's name must fit, or no annotation can deliver it.
SIGNAL_NAME_MAX_LENGTH = 63 - len("signal.")
SIGNAL_NAME_PATTERN = r"^[A-Za-z_]([A-Za-z0-9_-]*[A-Za-z0-9])?$"
SIGNAL_NAME_MESSAGE = (
    "a signal is sent as the annotation kurable.dev/signal.NAME, and Kubernetes limits an "
    "annotation name (signal.NAME) to 63 characters that begin and end with a letter or digit: "
    f"use at most {SIGNAL_NAME_MAX_LENGTH} characters (letters, digits, _ and -), starting with "
    "a letter or _ and ending with a letter or digit"
)

# A timestamp without an offset would be read in the operator's local time zone.
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
UNTIL_MESSAGE = (
    "until must be an RFC 3339 timestamp with a UTC offset, as Kubernetes writes them "
    "(2030-01-02T15:04:05Z or 2030-01-02T17:04:05+02:00), or a ${ } expression: without an "
    "offset the time would be read in the operator's local time zone"
)


def _signal_name_ok(expr: str) -> str:
    return f"{expr}.size() <= {SIGNAL_NAME_MAX_LENGTH} && {expr}.matches('{SIGNAL_NAME_PATTERN}')"


def _until_ok(expr: str) -> str:
    return f"{expr}.contains('${{') || {expr}.matches('{TIMESTAMP_PATTERN}')"


Until = Annotated[
    str,
    # Bounded so that the rule's cost over 500 steps stays inside the API server's budget.
    Field(max_length=1024, json_schema_extra=validations(cel(_until_ok("self"), UNTIL_MESSAGE))),
]
"""A wake-up time: an RFC 3339 timestamp with a UTC offset, or a `${ }` expression."""

SignalName = Annotated[
    str,
    Field(
        min_length=1,
        # Longer than a signal may be, so that the rule below (not a bare maxLength) says why.
        max_length=253,
        json_schema_extra=validations(cel(_signal_name_ok("self"), SIGNAL_NAME_MESSAGE)),
    ),
]
"""A signal's name: the NAME of the annotation `kurable.dev/signal.NAME` that delivers it."""


# Nested steps (a branch's, a compensation) are parsed into `Step` models here, but the
# CRD cannot describe a recursive schema: there they stay free-form objects, and
# `kurable.engine.validate` checks them when a template is applied or a run starts.
_FREE_FORM_STEP: dict[str, object] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
}


class Sleep(Model):
    """A durable timer: the wake-up time is journaled, so a restart does not restart it."""

    duration: Duration | None = None
    """How long to sleep, e.g. `30s`, `1h30m`."""
    until: Until | None = None
    """Sleep until this RFC 3339 timestamp with a UTC offset (`Z` or `+02:00`), or a `${ }`
    expression giving one."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.duration) != has(self.until)",
                "sleep needs exactly one of duration or until",
            )
        )
    }


class Wait(Model):
    """Wait for a named signal; the step's output is the signal's JSON payload."""

    signal: SignalName
    """Signal name, as in `kubectl annotate workflow/NAME kurable.dev/signal.NAME='{...}'`."""
    timeout: Duration | None = None
    """Give up waiting after this long (the step fails with reason `Timeout`)."""


class SecretKeyRef(Model):
    """A key of a Secret in the workflow's namespace."""

    name: str
    """Secret name."""
    key: str
    """Key within the Secret's data."""


class HeaderSource(Model):
    """Where a header value comes from."""

    secret_key_ref: SecretKeyRef
    """The Secret key holding the value."""


class Header(Model):
    """One request header, written like a container's env var."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    """Header name."""
    value: str | None = None
    """Header value (may contain `${ }` expressions)."""
    value_from: HeaderSource | None = None
    """Take the value from a Secret instead."""

    model_config = {
        "json_schema_extra": validations(
            cel("has(self.value) != has(self.valueFrom)", "a header needs value or valueFrom")
        )
    }


class Http(Model):
    """Call an HTTP service. `Idempotency-Key: <workflow uid>/<step>` is always sent."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    """HTTP method."""
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    """URL (may contain `${ }` expressions)."""
    headers: list[Header] | None = None
    """Request headers: a value (may contain `${ }`) or a value from a Secret."""
    body: JSONValue = None
    """Request body, sent as JSON (`${ }` expressions are evaluated)."""
    timeout: Duration | None = None
    """Per-request timeout (default 30s)."""
    retry_on_status: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    """4xx status codes that should be retried (5xx are always retryable)."""


class ChildWorkflow(Model):
    """Start a child Workflow from a template (owned by this one) and wait for its result."""

    template_ref: ObjectRef
    """The WorkflowTemplate to run."""
    input: JSONValue = None
    """The child's input (`${ }` expressions are evaluated)."""


class EntityCommand(Model):
    """Send a command to an Entity and take its reply as the step's output."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Entity's name (may be a `${ }` expression)."""
    command: Name
    """The command, as declared by the EntityType."""
    input: JSONValue = None
    """The command's input (`${ }` expressions are evaluated)."""


class ViewQuery(Model):
    """Query a View; the step's output is the matching rows."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The View's name."""
    query: Name
    """The query, as the View names it."""
    params: JSONObject | None = None
    """The query's parameters (`${ }` expressions are evaluated)."""


class Emit(Model):
    """Publish a message to a Topic, exactly once: its id is derived from the step's
    idempotency key, so a step executed again after a crash does not publish twice."""

    topic: Annotated[str, Field(min_length=1, max_length=253)]
    """The Topic's name."""
    key: Expression | None = None
    """The message's key (may be a `${ }` expression): messages of one key are consumed
    in order. Default: the run's name."""
    data: JSONValue = None
    """The message's data (`${ }` expressions are evaluated)."""


class Job(Model):
    """Run a Kubernetes Job from a pod template and wait for it to finish."""

    template: JSONObject
    """A PodTemplateSpec."""
    backoff_limit: Annotated[int, Field(ge=0)] | None = None
    """The Job's backoffLimit."""


class Branch(Model):
    """One branch of a `parallel` step: its own sequence of steps."""

    name: Name
    """Branch name."""
    steps: Annotated[
        list[Step],
        Field(min_length=1),
        WithJsonSchema({"type": "array", "items": _FREE_FORM_STEP, "minItems": 1}),
    ]
    """The branch's steps (same language as the workflow's steps)."""


class Parallel(Model):
    """Run branches at once; the step succeeds when all branches succeed."""

    branches: Annotated[
        list[Branch],
        Field(
            min_length=1,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ]
    """The branches."""
    fail_fast: bool = True
    """Cancel the other branches as soon as one fails."""


class ForEach(Model):
    """Run the step once per item of a list."""

    items: Expression
    """A CEL expression giving a list."""
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 1
    """How many items run at once."""


class Backoff(Model):
    """Delay between attempts: initial * factor^(attempt-1), capped at max, then jittered
    down (never above max)."""

    initial: Duration = "1s"
    """Delay before the second attempt."""
    factor: Annotated[float, Field(ge=1.0, le=10.0)] = 2.0
    """Growth factor per attempt."""
    max: Duration = "5m"
    """Longest delay, jitter included."""
    jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    """Random fraction of the capped delay removed: the delay is drawn from [d*(1-jitter), d]
    (0.1 = up to 10% shorter; 1 = AWS's full jitter; 0.5 = equal jitter)."""


class Retry(Model):
    """How a failing step is retried."""

    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 1
    """Attempts in total, including the first."""
    backoff: Backoff | None = None
    """Delay between attempts."""
    retry_on: list[Name] | None = None
    """Error kinds to retry (default: all retryable errors: Timeout, ConnectionError,
    HttpServerError, Unavailable). Other kinds: HttpClientError, CommandRejected,
    EntityNotFound, EntityTypeNotFound, SecretNotFound, ExpressionError, ChildFailed,
    ChildConflict, OutputTooLarge (an output over the operator's --max-value-bytes; not
    retried unless listed, since the action would run again)."""


class OnFailure(Model):
    """Where to go when the step has failed for good (Akka's failoverTo)."""

    goto: Name
    """The step to continue with."""


class Step(Model):
    """One named action of a workflow."""

    name: Name
    """The step's name, unique in the workflow; outputs are read as `steps.NAME.output`."""

    set: JSONObject | None = None
    """Assign workflow variables: `{var: value}`; values may be `${ CEL }` expressions."""
    sleep: Sleep | None = None
    """A durable timer."""
    wait: Wait | None = None
    """Wait for a signal."""
    http: Http | None = None
    """Call an HTTP service."""
    workflow: ChildWorkflow | None = None
    """Run a child workflow."""
    entity: EntityCommand | None = None
    """Send a command to an Entity."""
    view: ViewQuery | None = None
    """Query a View."""
    emit: Emit | None = None
    """Publish to a topic."""
    job: Job | None = None
    """Run a Kubernetes Job."""
    parallel: Parallel | None = None
    """Run branches at once."""

    when: Expression | None = None
    """CEL condition; when false the step is Skipped."""
    next: Name | None = None
    """The step to run after this one (default: the following step)."""
    for_each: ForEach | None = None
    """Run the step once per item."""
    retry: Retry | None = None
    """Retry policy (default: the workflow's, else one attempt)."""
    timeout: Duration | None = None
    """Fail an attempt that takes longer than this."""
    on_failure: OnFailure | None = None
    """Continue at another step when this one fails for good."""
    compensate: Annotated[Compensation, WithJsonSchema(_FREE_FORM_STEP)] | None = None
    """A step that undoes this one; run, in reverse order, when the workflow fails."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[" + ", ".join(f"has(self.{a})" for a in ACTIONS) + "].filter(x, x).size() == 1",
                "a step needs exactly one action: " + ", ".join(ACTIONS),
            )
        )
    }

    @property
    def action(self) -> str:
        """The step's kind: the name of its one action field."""
        return next(a for a in ACTIONS if getattr(self, a) is not None)


class Compensation(Step):
    """A step that undoes another; it is journaled as `<step>:compensate`."""

    name: Name = "compensate"
    """Ignored: a compensation is named after the step it undoes."""


Branch.model_rebuild()
Step.model_rebuild()

Steps = Annotated[
    list[Step],
    Field(
        min_length=1,
        max_length=500,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ),
]


class WorkflowSpec(Model):
    """What to run: inline `steps`, or a `templateRef` with `input`."""

    steps: Steps | None = None
    """The steps, run in order unless `next`, `when` or `onFailure` say otherwise."""
    template_ref: ObjectRef | None = None
    """Run a WorkflowTemplate instead of inline steps."""
    input: JSONValue = None
    """The run's input, available to expressions as `input`."""
    output: JSONValue = None
    """The run's result (`${ }` expressions over `steps`, `vars`, `input`)."""
    retry: Retry | None = None
    """Default retry policy of the steps."""
    timeout: Duration | None = None
    """Fail the whole run (and compensate) when it takes longer than this, counted from its
    start (from its creation while it waits for its template), suspended time included."""
    suspend: bool = False
    """Pause before the next step (and before finishing); set back to false to resume. The
    run's timeout keeps running while it is suspended."""
    cancel: bool = False
    """Cancel the run: compensations run, phase becomes Cancelled."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    """Delete the run this many seconds after it finished."""

    model_config = {"json_schema_extra": lambda schema: _workflow_spec_rules(schema)}


IN_FLIGHT_FIELDS = ("suspend", "cancel", "ttlSecondsAfterFinished")
"""The fields of a Workflow's spec that may change while it runs; the rest is its definition."""

UNTYPED_DEFINITION_FIELDS = ("input", "output")
"""Definition fields holding any JSON value: a CRD rule cannot see them (the API server gives
an untyped value no CEL type), so `kurable.api.crd.definition_policy` keeps them unchanged."""


def definition_changed(field: str) -> str:
    """Why an edit of `field` (e.g. `spec.steps`) of a Workflow is refused: start a new run."""
    return (
        f"{field} cannot change once the run exists: a run keeps the definition it started "
        f"with, and only {', '.join(IN_FLIGHT_FIELDS)} change in flight; to run a changed "
        "definition, start a new run (a new Workflow)"
    )


def _workflow_spec_rules(schema: dict[str, Any]) -> None:
    """Exactly one of steps and templateRef; the definition fields immutable (transition
    rules: `oldSelf` is the stored spec on update)."""
    properties = schema["properties"]
    definition = [
        f for f in properties if f not in IN_FLIGHT_FIELDS and f not in UNTYPED_DEFINITION_FIELDS
    ]
    for field in definition:
        node = properties[field]
        # A new list: the node's own may be shared with other fields of the same type.
        node["x-kubernetes-validations"] = [
            *node.get("x-kubernetes-validations", []),
            cel("self == oldSelf", definition_changed(f"spec.{field}")),
        ]
    schema["x-kubernetes-validations"] = [
        cel(
            "has(self.steps) != has(self.templateRef)",
            "a workflow needs exactly one of spec.steps or spec.templateRef",
        ),
        # A field-level rule runs only when the field is in both objects: adding or
        # removing one is caught here.
        cel(
            " && ".join(f"has(self.{f}) == has(oldSelf.{f})" for f in definition),
            definition_changed("the definition (" + ", ".join(definition) + ")"),
        ),
    ]


Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled", "Invalid"]
StepPhase = Literal["Pending", "Running", "Waiting", "Retrying", "Succeeded", "Failed", "Skipped"]


class StepStatus(Model):
    """The projection of one step's journal records."""

    name: str
    """The step."""
    phase: StepPhase
    """Where the step is."""
    attempts: int = 0
    """Attempts started."""
    started_at: str | None = None
    """When the first attempt started."""
    finished_at: str | None = None
    """When the step finished."""
    wake_at: str | None = None
    """For timers: when the step is due."""
    output: JSONValue = None
    """The output, shortened when large (the journal keeps it whole)."""
    message: str | None = None
    """Error message of the last failed attempt."""


class TemplateRef(Model):
    """Which template definition a run runs."""

    name: str
    """The WorkflowTemplate."""
    generation: int
    """Its metadata.generation when the run started."""
    uid: str | None = None
    """Its uid (a template deleted and re-created is another template)."""


class JournalRef(Model):
    """Where the full journal lives in etcd."""

    records: int = 0
    """Records journaled."""
    revision: int = 0
    """etcd revision of the last record."""


class WorkflowStatus(Model):
    """Written by the operator only: a projection of the journal in etcd."""

    phase: Phase | None = None
    """Pending, Running, Suspended, Succeeded, Failed, Cancelled or Invalid."""
    reason: str | None = None
    """Why the run ended: Succeeded, StepFailed, Timeout, Cancelled, Compensated,
    CompensationFailed, Invalid, ..."""
    current_step: str | None = None
    """The step being run or waited for (`<step>:compensate` while compensating)."""
    attempts: int | None = None
    """Attempts of the current step."""
    template: TemplateRef | None = None
    """The WorkflowTemplate generation this run was pinned to at start."""
    message: str | None = None
    """What is happening, or what to fix."""
    started_at: str | None = None
    """When the run started."""
    finished_at: str | None = None
    """When the run finished."""
    steps: list[StepStatus] | None = None
    """The most recent steps (the full history: `kurable history workflow/NAME`)."""
    steps_completed: int | None = None
    """How many steps have finished."""
    output: JSONValue = None
    """The run's result, shortened when large."""
    error: JSONObject | None = None
    """The failure that ended the run: step, reason, message."""
    journal: JournalRef | None = None
    """The journal this status was projected from."""
    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    executor: str | None = None
    """The operator replica (executor slot, e.g. its pod name) driving the run; replicas
    share the runs by rendezvous hashing of their uid."""
    conditions: Conditions | None = None
    """Succeeded, Suspended, Stalled."""
    kopf: JSONObject | None = None
    """The framework's own bookkeeping (kopf), kept here rather than in annotations."""

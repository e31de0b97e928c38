"""Who may do what: the SubjectAccessReview attributes of each route (pure).

A platform team grants access to the endpoint with ordinary Roles on `kurable.dev`
resources, and `kubectl auth can-i` answers for it:

| request                       | verb       | resource (subresource) | name         |
|-------------------------------|------------|------------------------|--------------|
| start a run                   | create     | workflows              | -            |
| read runs, history, events    | get / list | workflows              | the run      |
| signal                        | create     | workflows/signal       | the run      |
| suspend / resume / cancel     | patch      | workflows              | the run      |
| entity command                | create     | entities/command       | the entity   |
| read entity, events           | get        | entities               | the entity   |
| trigger / backfill a schedule | create     | schedules/trigger      | the schedule |
| read a schedule (console)     | get        | schedules              | the schedule |
| publish to a topic            | create     | topics/publish         | the topic    |
| query a view                  | get        | views                  | the view     |
"""

from __future__ import annotations

from dataclasses import dataclass

from kurable.api.v1alpha1 import GROUP


@dataclass(frozen=True)
class Access:
    """The resource attributes of one request, as a SubjectAccessReview asks them."""

    verb: str
    resource: str
    namespace: str
    name: str = ""
    subresource: str = ""

    def resource_attributes(self) -> dict[str, str]:
        """`spec.resourceAttributes` of the SubjectAccessReview."""
        out = {
            "group": GROUP,
            "verb": self.verb,
            "resource": self.resource,
            "namespace": self.namespace,
        }
        if self.subresource:
            out["subresource"] = self.subresource
        if self.name:
            out["name"] = self.name
        return out

    def describe(self) -> str:
        """`create entities/command "alice" in namespace shop`, for a 403's detail."""
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        named = f' "{self.name}"' if self.name else ""
        return f"{self.verb} {what}.{GROUP}{named} in namespace {self.namespace}"


def start_run(namespace: str) -> Access:
    return Access("create", "workflows", namespace)


def read_run(namespace: str, name: str) -> Access:
    return Access("get", "workflows", namespace, name)


def list_runs(namespace: str) -> Access:
    return Access("list", "workflows", namespace)


def signal_run(namespace: str, name: str) -> Access:
    return Access("create", "workflows", namespace, name, "signal")


def control_run(namespace: str, name: str) -> Access:
    """Suspend, resume, cancel: they patch the run's spec."""
    return Access("patch", "workflows", namespace, name)


def command_entity(namespace: str, name: str) -> Access:
    return Access("create", "entities", namespace, name, "command")


def read_entity(namespace: str, name: str) -> Access:
    return Access("get", "entities", namespace, name)


def trigger_schedule(namespace: str, name: str) -> Access:
    """Trigger and backfill: both start the schedule's runs."""
    return Access("create", "schedules", namespace, name, "trigger")


def read_schedule(namespace: str, name: str) -> Access:
    """The console's view of a Schedule."""
    return Access("get", "schedules", namespace, name)


def publish(namespace: str, topic: str) -> Access:
    """Publish a message to a Topic."""
    return Access("create", "topics", namespace, topic, "publish")


def read_view(namespace: str, name: str) -> Access:
    """Query a View."""
    return Access("get", "views", namespace, name)

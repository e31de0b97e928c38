"""CustomResourceDefinitions generated from the pydantic models (one source of truth).

pydantic writes JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: no
`$ref`, no `anyOf` of different types, no `additionalProperties: false`, a `type` at
every level except free-form values (`x-kubernetes-preserve-unknown-fields`).
`structural_schema` makes the one from the other; `crd` wraps it into a CRD.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .v1alpha1 import GROUP, KINDS, ResourceKind
from .v1alpha1.workflow import UNTYPED_DEFINITION_FIELDS, definition_changed

# JSON Schema keywords that a CRD schema does not take (or that we leave to the operator:
# defaults are applied by the models, never written into a user's stored spec).
_DROPPED = {"title", "default", "$defs", "examples", "const"}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `model`, as a CRD expects it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs, stack=())


def _convert(node: Any, defs: dict[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise TypeError(f"unexpected schema node {node!r}")
    node = dict(node)

    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name in stack:
            raise ValueError(f"recursive model {name}: CRD schemas cannot recurse; use JSONObject")
        target = _convert(defs[name], defs, (*stack, name))
        # Keywords next to a $ref (description, CEL rules) refine the referenced schema.
        return _merge(target, _convert(node, defs, stack))

    for combinator in ("allOf", "anyOf", "oneOf"):
        if combinator in node:
            branches = [b for b in node.pop(combinator) if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(
                    f"{combinator} of {len(branches)} types is not structural: {branches}"
                )
            return _merge(_convert(branches[0], defs, stack), _convert(node, defs, stack))

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out["properties"] = {k: _convert(v, defs, stack) for k, v in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs, stack)
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out["additionalProperties"] = _convert(value, defs, stack)
            # `false` (extra="forbid") and `true` are not structural; pruning and
            # preserve-unknown-fields say the same in Kubernetes' terms.
        elif key == "enum" and "type" not in node:
            out["enum"] = value
            out["type"] = _json_type(value[0])
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields") and out.get("type") == "object":
        out.pop("additionalProperties", None)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if key == "x-kubernetes-validations":
            merged[key] = list(merged.get(key, [])) + list(value)
        else:
            merged[key] = value
    return merged


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def crd(kind: ResourceKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec_schema = structural_schema(kind.spec)
    status_schema = structural_schema(kind.status)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "kurable"},
        },
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "versions": [
                {
                    "name": kind.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            **({"description": c.description} if c.description else {}),
                            **({"priority": c.priority} if c.priority else {}),
                        }
                        for c in kind.printer_columns
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render(kind: ResourceKind) -> str:
    """The CRD of `kind` as the YAML file committed under `crds/`."""
    header = "# Generated from the pydantic models in kurable/api by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def file_name(kind: ResourceKind) -> str:
    return f"{kind.group}_{kind.plural}.yaml"


DEFINITION_POLICY = "workflow-definition.kurable.dev"
"""The ValidatingAdmissionPolicy (and its binding) keeping a Workflow's untyped definition
fields unchanged."""


def definition_policy() -> tuple[dict[str, Any], dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding (admissionregistration.k8s.io/v1,
    Kubernetes 1.30+) refusing an update of a Workflow that changes `spec.input` or
    `spec.output`.

    A CRD rule cannot: the API server gives an untyped (any JSON) value no CEL type, so no
    rule may name it. An admission policy sees the object as a dynamic value and compares
    it whole; measured on a 1.2 MB input, within the API server's cost budget.
    """
    labels = {"app.kubernetes.io/part-of": "kurable"}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": DEFINITION_POLICY, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        # Not workflows/status: the operator writes status freely.
                        "resources": ["workflows"],
                    }
                ]
            },
            "validations": [
                {
                    # `?` reads an absent field as an empty optional, so adding or removing
                    # the field is a change too.
                    "expression": f"object.spec.?{field} == oldObject.spec.?{field}",
                    "message": definition_changed(f"spec.{field}"),
                    "reason": "Invalid",
                }
                for field in UNTYPED_DEFINITION_FIELDS
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": DEFINITION_POLICY, "labels": labels},
        "spec": {"policyName": DEFINITION_POLICY, "validationActions": ["Deny"]},
    }
    return policy, binding


def render_all() -> dict[str, str]:
    """Every file of `crds/` by name: each kind's CRD, and the Workflow's admission policy
    and its binding (one document a file, as the chart reads them)."""
    header = "# Generated from the pydantic models in kurable/api by `make crds`. Do not edit.\n"
    files = {file_name(kind): render(kind) for kind in KINDS}
    policy, binding = definition_policy()
    for name, document in (("policy", policy), ("policybinding", binding)):
        files[f"{GROUP}_workflows.{name}.yaml"] = header + yaml.safe_dump(
            document, sort_keys=False, width=100
        )
    return files


def write_all(directory: Path) -> list[Path]:
    """Write every file of `render_all` into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths

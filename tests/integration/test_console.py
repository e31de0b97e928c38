"""The console at /ui/ in a real headless Chromium: the runs page lists a finished and a
running run, the run page draws the diagram in the steps' colours with the journal, its
signal button delivers a signal, the entity and schedule pages show theirs, with no
console error; and `kurable graph` output of every example renders with Mermaid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kurable.engine.graph import PHASE_COLOURS
from kurable.testing import ControlPlane
from tests.conftest import ROOT

from .browser import Browser, artifacts_dir
from .conftest import apply, eventually, wait_phase
from .endpoint_http import call
from .observe_stack import Stack, stack

pytestmark = pytest.mark.integration

QUICK = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "quick"},
    "spec": {"steps": [{"name": "only", "set": {"x": 1}}]},
}
APPROVAL = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "approval"},
    "spec": {
        "steps": [
            {"name": "ask", "set": {"asked": True}, "compensate": {"set": {"undone": True}}},
            {"name": "approve", "wait": {"signal": "approve", "timeout": "1h"}},
            {"name": "record", "set": {"by": "${ steps.approve.output.by }"}},
        ]
    },
}


@pytest.fixture(scope="module")
def up(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(control_plane, tmp_path_factory.mktemp("console"), "console") as running:
        yield running


def fill(step: str) -> str:
    return f"document.querySelector('g.node[data-id=\"{step}\"] rect')?.getAttribute('fill')"


async def test_the_console_lists_runs_draws_a_run_and_sends_a_signal(up: Stack) -> None:
    ns = up.namespace
    for manifest in (QUICK, APPROVAL):
        apply(up.cp, ns, manifest)
    for name, template in (("finished-run", "quick"), ("running-run", "approval")):
        answer = call(
            up.v1("workflows"), "POST", up.token, {"templateRef": {"name": template}, "name": name}
        )
        assert answer.status == 201, answer.text
    wait_phase(up.cp, ns, "finished-run", ("Succeeded",))
    wait_phase(up.cp, ns, "running-run", ("Running",))
    apply(up.cp, ns, ROOT / "examples/transfer/00-wallet.yaml")
    apply(up.cp, ns, ROOT / "examples/transfer/10-entities.yaml")
    apply(up.cp, ns, ROOT / "examples/schedule/00-template.yaml")
    apply(up.cp, ns, ROOT / "examples/schedule/10-schedule.yaml")
    deposit = call(
        up.v1("entities/bob/commands/deposit"), "POST", up.token, {"input": {"amount": 5}}
    )
    shots = artifacts_dir()

    async with Browser() as browser:
        await browser.goto(f"{up.endpoint.url}/ui/#/runs?namespace={ns}")
        await browser.wait_for("document.getElementById('login-form')", what="the sign-in form")
        await browser.evaluate(
            f"document.getElementById('token').value = {json.dumps(up.token)};"
            "document.getElementById('login-form').requestSubmit(); true"
        )
        rows = await browser.wait_for(
            "(() => { const r = [...document.querySelectorAll('tr[data-run]')]"
            ".map(t => [t.dataset.run, t.dataset.phase]);"
            " return r.length >= 2 ? r : null })()",
            what="both runs listed",
        )
        assert dict(rows) == {"finished-run": "Succeeded", "running-run": "Running"}
        await browser.screenshot(shots / "console-runs.png")

        await browser.evaluate(f"location.hash = '#/run/{ns}/running-run'; true")
        await browser.wait_for(
            f"{fill('approve')} === '{PHASE_COLOURS['Waiting']}'", what="diagram"
        )
        assert await browser.evaluate(fill("ask")) == PHASE_COLOURS["Succeeded"]
        assert await browser.evaluate(fill("record")) == PHASE_COLOURS["Pending"]
        assert (
            await browser.evaluate("document.querySelector('g.node.compensation')?.dataset.id")
            == "ask:compensate"
        )
        journal = await browser.evaluate(
            "[...document.querySelectorAll('#timeline li')].map(li => li.dataset.type)"
        )
        assert journal[0] == "WorkflowStarted" and "StepStarted" in journal
        assert await browser.evaluate("document.getElementById('signal').disabled") is False
        assert await browser.evaluate("document.getElementById('cancel').disabled") is False
        await browser.screenshot(shots / "console-run-waiting.png")

        await browser.evaluate(
            "document.getElementById('signal-name').value = 'approve';"
            "document.getElementById('signal-payload').value = '{\"by\": \"browser\"}';"
            "document.getElementById('signal').click(); true"
        )
        finished = wait_phase(up.cp, ns, "running-run", ("Succeeded",))
        assert finished["status"]["steps"][-1]["output"] == {"by": "browser"}
        await browser.wait_for(
            f"{fill('record')} === '{PHASE_COLOURS['Succeeded']}'", what="the run's end drawn"
        )
        await browser.screenshot(shots / "console-run-finished.png")

        assert deposit.status == 200, deposit.text
        await browser.evaluate(f"location.hash = '#/entities?namespace={ns}&name=bob'; true")
        state = await browser.wait_for(
            "document.querySelector('#entity-view pre')?.textContent", what="entity state"
        )
        assert json.loads(state) == {"balance": 5}
        await browser.screenshot(shots / "console-entity.png")

        await browser.evaluate(
            f"location.hash = '#/schedules?namespace={ns}&name=nightly-settlement'; true"
        )
        await browser.wait_for(
            "document.querySelector('#schedule-view pre')?.textContent.includes('next')",
            what="the schedule's status",
        )
        await browser.screenshot(shots / "console-schedule.png")
        assert browser.errors == []


def test_the_console_offers_no_button_rbac_refuses(up: Stack) -> None:
    """The access view says what the caller may do; a reader may do neither."""
    from .endpoint_http import grant, service_account_token

    ns = up.namespace
    apply(up.cp, ns, QUICK)
    call(
        up.v1("workflows"),
        "POST",
        up.token,
        {"templateRef": {"name": "quick"}, "name": "looked-at"},
    )
    reader = service_account_token(up.cp, ns, "reader")
    grant(
        up.cp,
        ns,
        "reader",
        [{"apiGroups": ["kurable.dev"], "resources": ["workflows"], "verbs": ["get", "list"]}],
    )
    url = f"{up.endpoint.url}/ui/api/namespaces/{ns}/workflows/looked-at/access"
    assert eventually(lambda: call(url, token=reader), lambda a: a.status == 200).body == {
        "signal": False,
        "control": False,
    }
    assert call(url, token=up.token).body == {"signal": True, "control": True}
    assert call(f"{up.endpoint.url}/ui/api/namespaces/{ns}/workflows/looked-at/graph").status == 401


def test_kurable_graph_draws_a_run_with_its_steps_phases_and_a_template(up: Stack) -> None:
    ns = up.namespace
    apply(up.cp, ns, APPROVAL)
    started = call(
        up.v1("workflows"), "POST", up.token, {"templateRef": {"name": "approval"}, "name": "drawn"}
    )
    assert started.status == 201, started.text
    eventually(
        lambda: call(up.v1("workflows/drawn"), token=up.token).body,
        lambda run: run["currentStep"] == "approve",
        what="the run waiting",
    )
    env = {**os.environ, **up.cp.env(), "KURABLE_ETCD_PREFIX": up.space.prefix}

    def graph(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "kurable", "graph", *args, "-n", ns],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    drawn = graph("workflow/drawn")
    assert drawn.startswith("flowchart TD\n")
    assert '["ask (set) [Succeeded]"]' in drawn
    assert '["approve (wait) [Waiting]"]' in drawn
    assert '["record (set) [Pending]"]' in drawn
    assert f"classDef Waiting fill:{PHASE_COLOURS['Waiting']}" in drawn
    dot = graph("workflow/drawn", "--format", "dot")
    assert dot.startswith("digraph workflow {") and PHASE_COLOURS["Waiting"] in dot
    template = graph("workflowtemplate/approval")
    assert '["approve (wait)"]' in template and "classDef" not in template


def example_graphs(into: Path) -> dict[str, str]:
    """`kurable graph -f` of every example holding a Workflow or WorkflowTemplate, by
    path; mermaid.min.js (hack/mermaid.sh) copied into `into`."""
    mermaid = subprocess.run(
        [str(ROOT / "hack" / "mermaid.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    shutil.copy(mermaid, into / "mermaid.min.js")
    texts = {}
    kurable = shutil.which("kurable") or str(ROOT / ".venv/bin/kurable")
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        if "kind: Workflow" not in path.read_text():
            continue
        done = subprocess.run([kurable, "graph", "-f", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        texts[str(path.relative_to(ROOT))] = done.stdout
    return texts


async def test_kurable_graph_of_every_example_renders_with_mermaid(tmp_path: Path) -> None:
    texts = example_graphs(tmp_path)
    assert len(texts) >= 10
    (tmp_path / "index.html").write_text(
        '<!doctype html><html><head><link rel="icon" href="data:,"></head><body>'
        '<script src="mermaid.min.js"></script></body></html>'
    )
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        async with Browser() as browser:
            await browser.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            await browser.wait_for("typeof mermaid !== 'undefined'", what="mermaid loaded")
            rendered = await browser.evaluate(
                "(async () => { mermaid.initialize({startOnLoad: false}); const out = {};"
                f" const texts = {json.dumps(texts)};"
                " let i = 0; for (const [where, text] of Object.entries(texts)) {"
                "  try { await mermaid.parse(text);"
                "   const { svg } = await mermaid.render('g' + (i++), text);"
                "   out[where] = svg.includes('<svg') ? 'ok' : 'no svg';"
                "  } catch (e) { out[where] = String(e.message || e); } }"
                " return out; })()"
            )
            assert browser.errors == []
    finally:
        server.shutdown()
    assert rendered == {where: "ok" for where in texts}

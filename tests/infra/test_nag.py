"""cdk-nag AwsSolutions on the stack: no finding left unacknowledged, every
acknowledgment with a reason, and none that no longer matches a finding."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aws_cdk import PolicyValidationPluginReport
from aws_cdk.assertions import Template

from app import build_app
from infra import nag
from infra.stack import TbCssStack

MIN_REASON = 20  # characters: a sentence, not "ok" or "n/a"
ACKNOWLEDGED = "aws:cdk:acknowledged-rules"  # the metadata Validations.acknowledge writes


def findings(report: PolicyValidationPluginReport, severity: str) -> list[str]:
    return sorted(
        f"{violation.rule_name} at {resource.construct_path}"
        for violation in report.violations
        if violation.severity == severity
        for resource in violation.violating_resources
    )


@pytest.fixture(scope="session")
def report(stack: TbCssStack, template: Template) -> PolicyValidationPluginReport:
    # After the template: synthesis has run the stack's aspects, as `cdk synth` would.
    return nag.checks().validate_scope(stack)


@dataclass(frozen=True)
class Unacknowledged:
    """The app as `cdk synth -c nag=true` builds it, without its acknowledgments."""

    stack: TbCssStack
    report: PolicyValidationPluginReport
    synth_error: str


@pytest.fixture(scope="session")
def unacknowledged(tmp_path_factory: pytest.TempPathFactory) -> Unacknowledged:
    outdir = str(tmp_path_factory.mktemp("nag"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nag, "acknowledge", lambda _stack: None)
        app = build_app(outdir, context={nag.CONTEXT_KEY: "true"})
    try:
        app.synth()
        synth_error = ""
    except RuntimeError as error:
        synth_error = str(error)
    (stack,) = [c for c in app.node.children if isinstance(c, TbCssStack)]
    return Unacknowledged(stack, nag.checks().validate_scope(stack), synth_error)


def test_no_awssolutions_error_is_left_unacknowledged(
    report: PolicyValidationPluginReport,
) -> None:
    assert findings(report, "error") == []


def test_no_warning_either_so_synth_with_nag_passes(report: PolicyValidationPluginReport) -> None:
    # `cdk synth -c nag=true` fails on warnings as well as errors.
    assert findings(report, "warning") == []


def test_every_acknowledgment_gives_a_reason(stack: TbCssStack) -> None:
    reasons = {
        f"{rule} at {construct.node.path}": reason
        for construct in stack.node.find_all()
        for entry in construct.node.metadata
        if entry.type == ACKNOWLEDGED
        for rule, reason in entry.data.items()
    }
    assert reasons
    assert {k: r for k, r in reasons.items() if len(r.strip()) < MIN_REASON} == {}


def test_synth_with_nag_fails_on_a_finding_not_acknowledged(
    unacknowledged: Unacknowledged,
) -> None:
    assert "ValidationFailed" in unacknowledged.synth_error
    assert "AwsSolutions-L1" in unacknowledged.synth_error


def test_every_waiver_still_matches_a_finding(unacknowledged: Unacknowledged) -> None:
    stack, report = unacknowledged.stack, unacknowledged.report
    found = [
        (violation.rule_name, resource.construct_path or "")
        for violation in report.violations
        for resource in violation.violating_resources
    ]
    stale = [
        f"{waiver.finding} at {scope.node.path}"
        for waiver in nag.waivers(stack)
        for scope in waiver.scopes
        if not any(
            rule == waiver.finding and f"{path}/".startswith(f"{scope.node.path}/")
            for rule, path in found
        )
    ]
    assert stale == []

"""CDK assertions on the activation module: routes, the state machine's
JSONPath definition with its Retry/Catch, and the resources moto must deploy."""

from __future__ import annotations

import json
from typing import Any

from infra.activation import ActivationTimings
from tests.infra.test_stack_template import (
    Resources,
    _actions,
    _resources,
    _routes,
    _statements_of,
    function_named,
    of_type,
)


def _definition(resources: Resources, construct: str = "Activation") -> dict[str, Any]:
    """The definition of the state machine of one module's construct."""
    (machine,) = [
        props
        for name, props in of_type(resources, "AWS::StepFunctions::StateMachine").items()
        if name.startswith(construct)
    ]
    parts = machine["DefinitionString"]["Fn::Join"][1]
    # Function ARNs are tokens inside the JSON; any string stands in for them.
    text = "".join(p if isinstance(p, str) else "arn:fn" for p in parts)
    definition: dict[str, Any] = json.loads(text)
    return definition


def test_activation_routes_go_to_the_activation_function(resources: Resources) -> None:
    fn_name, _ = function_named(resources, "functions.activation.handler.handler")
    routes = _routes(resources)
    for route in ("POST /activate-sim", "GET /activations/{activation_id}", "GET /users/{user_id}"):
        assert json.dumps({"Fn::GetAtt": [fn_name, "Arn"]}) in json.dumps(routes[route]), route
        assert routes[route]["AuthorizationType"] == "CUSTOM", route


def test_the_workflow_is_jsonpath_asl_with_the_designed_retries(resources: Resources) -> None:
    definition = _definition(resources)
    states = definition["States"]
    assert definition.get("QueryLanguage", "JSONPath") == "JSONPath"
    assert definition["StartAt"] == "VerifyKyc"
    *_, kyc_retry, worker_retry = states["VerifyKyc"]["Retry"]
    assert kyc_retry["ErrorEquals"] == ["KycRejected", "KycProviderUnavailable"]
    assert kyc_retry["MaxAttempts"] == 1  # retry once
    assert worker_retry["ErrorEquals"] == ["States.ALL"]  # a crashed worker: again
    assert [c["Next"] for c in states["VerifyKyc"]["Catch"]] == ["RejectKyc", "Escalate"]
    # Step Functions takes the first retrier that matches: a permanent refusal is
    # never retried, a transient one backs off, a crashed worker is retried.
    *_, permanent, network_retry, worker_retry = states["ProvisionNetwork"]["Retry"]
    assert permanent == {"ErrorEquals": ["NetworkPermanentError"], "MaxAttempts": 0}
    assert worker_retry["ErrorEquals"] == ["States.ALL"]
    defaults = ActivationTimings()
    assert network_retry["ErrorEquals"] == ["NetworkTransientError"]
    assert network_retry["MaxAttempts"] == defaults.provision_attempts - 1  # 3 attempts in all
    assert network_retry["BackoffRate"] == defaults.provision_backoff_rate
    assert network_retry["IntervalSeconds"] == defaults.provision_interval_seconds
    assert states["ProvisionNetwork"]["Catch"][0]["Next"] == "Escalate"
    assert states["Escalate"]["Next"] == "Escalated"
    assert states["Escalated"]["Type"] == "Fail"
    for name in ("VerifyKyc", "ProvisionNetwork", "Complete", "Notify", "RejectKyc", "Escalate"):
        assert states[name]["Parameters"]["activation_id.$"] == "$.activation_id", name


def test_secret_parameter_queue_and_sender_exist_with_literal_names(resources: Resources) -> None:
    secrets = of_type(resources, "AWS::SecretsManager::Secret")
    (secret,) = [props for name, props in secrets.items() if name.startswith("Activation")]
    assert secret["Name"] == "tbcss-dev/kyc-fingerprint-pepper"
    assert secret["GenerateSecretString"]["PasswordLength"] >= 32
    (parameter,) = of_type(resources, "AWS::SSM::Parameter").values()
    assert parameter["Name"] == "/tbcss/dev/simulator-knobs"
    assert len(of_type(resources, "AWS::SES::EmailIdentity")) == 1
    _, tasks = function_named(resources, "functions.activation.tasks.handler")
    variables = tasks["Environment"]["Variables"]
    assert variables["KYC_PEPPER_SECRET_ID"] == secret["Name"]
    assert {"KYC_KEY_ID", "ESCALATION_QUEUE_URL", "SIMULATOR_KNOBS_PARAMETER"} <= set(variables)


def test_the_tasks_function_reads_and_writes_the_simulator_lines(resources: Resources) -> None:
    _, tasks = function_named(resources, "functions.activation.tasks.handler")
    prefix = tasks["Environment"]["Variables"]["SIMULATOR_LINES_PARAMETER_PREFIX"]
    assert prefix == "/tbcss/dev/simulator/lines"
    (statement,) = [
        s
        for s in _statements_of(resources, "functions.activation.tasks.handler")
        if "ssm:PutParameter" in _actions(s)
    ]
    assert sorted(_actions(statement)) == ["ssm:GetParameter", "ssm:PutParameter"]
    (arn,) = _resources(statement)
    # Only that path: arn:<partition>:ssm:ap-south-1:<account>:parameter/tbcss/dev/simulator/lines/*
    text = "".join(p if isinstance(p, str) else "<token>" for p in arn["Fn::Join"][1])
    assert text == "arn:<token>:ssm:ap-south-1:<token>:parameter/tbcss/dev/simulator/lines/*"
    # The API function never touches the network, so it may not write lines.
    for other in _statements_of(resources, "functions.activation.handler.handler"):
        assert "ssm:PutParameter" not in _actions(other)

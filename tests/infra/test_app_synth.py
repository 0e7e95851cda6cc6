"""`python app.py` synthesizes the stack offline, as the CDK CLI would run it,
here with `-c nag=true`: cdk-nag's AwsSolutions checks pass, or the synth fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_app_py_passes_cdk_nag_and_writes_the_cloudformation_template(tmp_path: Path) -> None:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # the venv's Node
        "CDK_OUTDIR": str(tmp_path),  # what `cdk synth --output` hands the app
        "CDK_CONTEXT_JSON": json.dumps({"nag": "true"}),  # what `-c nag=true` hands it
    }
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    template_file = tmp_path / "TbCss-dev.template.json"
    assert template_file.is_file(), sorted(p.name for p in tmp_path.iterdir())
    template = json.loads(template_file.read_text())
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert types >= {
        "AWS::DynamoDB::Table",
        "AWS::KMS::Key",
        "AWS::Events::EventBus",
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Authorizer",
        "AWS::ApiGateway::Method",
        "AWS::Lambda::Function",
        "AWS::IAM::Role",
    }
    assert "AWS::DynamoDB::GlobalTable" not in types
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "TbCss-dev" in manifest["artifacts"]

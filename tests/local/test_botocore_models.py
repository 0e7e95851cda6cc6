"""botocore sessions share one Loader once sharing is on (the workers' zygote
turns it on): models are decoded once per process, not once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest

from infra.local import botocore_models


@pytest.fixture(autouse=True)
def _sharing(monkeypatch: pytest.MonkeyPatch) -> None:
    """On for the test: monkeypatch puts back what was there (botocore's own, or the
    wrapper a runtime started earlier in this process installed for good)."""
    monkeypatch.setattr(botocore.session, "create_loader", botocore.session.create_loader)
    botocore_models.share_with_every_session()


def test_every_new_session_reads_the_shared_loader() -> None:
    shared = botocore_models.shared_loader()

    sessions = [boto3.session.Session() for _ in range(3)]

    assert all(session._loader is shared for session in sessions)
    paths = shared.search_paths
    assert len(paths) == len(set(paths)), f"each session added its data folder again: {paths}"


def test_a_decoded_model_serves_the_next_session_without_reading_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    botocore_models.decode_models(("sqs",), "ap-south-1")
    read: list[str] = []
    load_file = botocore.loaders.JSONFileLoader.load_file

    def counted(loader: Any, path: str) -> Any:
        read.append(path)
        return load_file(loader, path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", counted)
    session = boto3.session.Session("key", "secret", region_name="ap-south-1")
    session.client("sqs")

    assert read == [], "a new session's sqs client read its models from disk again"


def test_a_session_with_a_data_path_of_its_own_keeps_its_own_loader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))

    assert boto3.session.Session()._loader is not botocore_models.shared_loader()


def test_turning_sharing_on_again_keeps_one_wrapper() -> None:
    wrapped = botocore.session.create_loader

    botocore_models.share_with_every_session()  # as a second runtime in one process does

    assert botocore.session.create_loader is wrapped

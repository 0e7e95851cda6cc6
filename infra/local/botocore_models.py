"""One botocore Loader for every session of a process.

botocore gives each new session a Loader of its own, which decodes the JSON models
(services, endpoints, endpoint rule sets) from disk again: about 30 ms a service,
a quarter of a second for a handler's few clients and PynamoDB's. The runtime's
process shares one from its start (infra/local/runtime.py: the deploy's, pollers',
scheduler's and seeding threads' sessions), and the workers' zygote fills one
before it forks (infra/local/worker_main.py), so a worker's cold start finds the
models already decoded, as every later session of the worker does.

Sharing is what botocore does within a session: its clients all read one Loader,
whose cache is a plain dict. Two threads loading one service's model at once
could both merge its SDK extras into the one decoded dict; the workers' zygote
decodes them before any thread runs, and the runtime's threads share models
botocore already shared within a session.

botocore and boto3 only: the zygote loads this file by path, before any project code.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import botocore.loaders
import botocore.session

# Clients are made with a placeholder endpoint and credentials: making one sends
# nothing, and never walks the credential chain.
_NOWHERE = "http://127.0.0.1:9"
_PLACEHOLDER = "models"
ANY_REGION = "ap-south-1"  # a client needs one; the models are the same in every region
_SHARING = "_tbcss_shares_one_loader"  # marks botocore's create_loader once wrapped


@lru_cache(maxsize=1)
def shared_loader() -> botocore.loaders.Loader:
    return botocore.loaders.Loader(extra_search_paths=_PathsOnce())


class _PathsOnce(list[str]):
    """A loader's search paths: every boto3 session appends boto3's data folder
    to its loader's, which must not grow with each session sharing it."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


def share_with_every_session() -> None:
    """Every botocore session made from now on in this process (boto3's default
    one, PynamoDB's, Powertools') reads the shared loader, unless its
    configuration names a data path of its own."""
    original = botocore.session.create_loader
    if getattr(original, _SHARING, False):
        return  # on already: a second wrapper would change nothing

    def create_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
        return original(search_path_string) if search_path_string else shared_loader()

    setattr(create_loader, _SHARING, True)
    botocore.session.create_loader = create_loader


def decode_models(services: tuple[str, ...], region: str = ANY_REGION) -> None:
    """Decode what a client of each of ``services`` needs, into the shared loader."""
    import boto3  # noqa: PLC0415 - boto3's session adds its own data folder

    session = boto3.session.Session(
        aws_access_key_id=_PLACEHOLDER,
        aws_secret_access_key=_PLACEHOLDER,
        region_name=region,
        botocore_session=_session(),
    )
    for service in services:
        session.client(service, endpoint_url=_NOWHERE)  # type: ignore[call-overload]


def _session() -> Any:
    session = botocore.session.Session()
    session.register_component("data_loader", shared_loader())
    return session

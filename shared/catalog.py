"""The seed plan catalog shipped with the code (``shared/data/plans.json``)."""

from __future__ import annotations

import json
from importlib import resources

from shared.models import Plan


def seed_plans() -> list[Plan]:
    raw = json.loads(resources.files("shared.data").joinpath("plans.json").read_text())
    return [Plan.model_validate(entry) for entry in raw["plans"]]

"""Step-up under its documented module name (the code is in
:mod:`flask_ccsso.gate.stepup` and :mod:`flask_ccsso.gate.freshness`)."""

from __future__ import annotations

from .gate.freshness import Freshness, acr_satisfied, check_freshness, freshness_applies
from .gate.stepup import StepUpNotice, step_up, stepup_notice, stepup_url

__all__ = ["Freshness", "StepUpNotice", "acr_satisfied", "check_freshness", "freshness_applies", "step_up",
           "stepup_notice", "stepup_url"]

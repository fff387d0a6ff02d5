"""The compiler: spec file -> validated Spec -> Plan (no torch)."""
from .compile import PASS_NAMES, compile_spec
from .errors import Issue, Location, SpecError
from .plan import Estimate, OpNode, Plan, StagePlan

__all__ = ["PASS_NAMES", "compile_spec", "Issue", "Location", "SpecError", "Estimate", "OpNode", "Plan", "StagePlan"]

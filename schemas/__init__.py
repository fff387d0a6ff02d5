"""The spec language: frozen pydantic models (no torch). `Spec` is the root of a spec file."""
from .spec import SCHEMA_VERSION, Spec

__all__ = ["SCHEMA_VERSION", "Spec"]

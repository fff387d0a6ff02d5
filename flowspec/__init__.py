"""flowspec: one YAML spec for the whole text-to-image flow-matching life cycle."""
__version__ = "0.1.0"

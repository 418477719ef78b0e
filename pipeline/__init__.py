"""camsdd pipeline: the stages (pure functions, thin Beam shells) and the CLI."""

__version__ = "0.1.0"

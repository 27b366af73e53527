"""User-facing errors: raised for bad configuration, printed as one paragraph by entry points."""


class ConfigError(ValueError):
    """A configuration mistake the user can fix (printed without a traceback)."""

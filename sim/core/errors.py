"""User-facing errors. The CLI prints ``str(err)`` as one line and exits with code 2."""


class UserError(ValueError):
    """Bad input from the user (scenario field, trace row, CLI flag, catalog id)."""

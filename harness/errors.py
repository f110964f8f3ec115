"""One exception type for every user-facing failure, so the CLI can print one line and exit non-zero."""


class GolfError(Exception):
    """A problem the user can fix. The message names what is wrong and what to do."""

    exit_code = 2


class BudgetError(GolfError):
    """A track budget cannot be honoured (for example a dataset too small for fixed-data)."""

"""The search's user-error type: one line naming the problem and the fix, exit status 2."""

from __future__ import annotations

from cdarts_deploy.errors import UserError


class SearchInputError(UserError):
    """Bad user input to a search (data, options, output folder, checkpoint)."""

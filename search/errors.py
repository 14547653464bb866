"""The one exception type the search command turns into a clean exit-2 message."""

from __future__ import annotations


class SearchInputError(Exception):
    """Bad user input (data, options, output folder, checkpoint): one line naming the problem and the fix."""

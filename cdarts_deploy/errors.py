"""The one base class for mistakes a user can fix: every command prints it as one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (file, option, checkpoint, data, output folder).

    The message names the problem and the fix in one line; commands print it on stderr
    as ``<prog>: error: <message>`` and exit with status 2.  Subclasses only say where
    the mistake was found (genotype, checkpoint, search options ...).
    """

    exit_code = 2

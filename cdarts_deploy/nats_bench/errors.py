"""The one error of the benchmark reader: a one-line message naming the file, the problem and the fix."""

from __future__ import annotations

from cdarts_deploy.errors import UserError


class BenchmarkError(UserError, ValueError):
    """A benchmark folder or file that cannot be read; ``source`` is the file or folder."""

    def __init__(self, problem: str, source: str = "<benchmark>") -> None:
        self.problem = str(problem).replace("\n", " ")
        self.source = str(source).replace("\n", "\\n")
        super().__init__(f"{self.source}: {self.problem}")

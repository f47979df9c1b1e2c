"""Go's ``throw(s)``: a broken runtime invariant that ends the run as ``fatal``.

Go prints a few ``runtime: ...`` lines, then ``fatal error: <s>``, and dies. We keep the
message strings verbatim (so a report can be grepped against proc.go) and carry the extra
lines with the exception, so whoever ends the run can write exactly what Go would have.
"""


class Throw(Exception):
    """``throw(message)``, with ``prints``: the lines Go writes to stderr just before it."""

    def __init__(self, message: str, prints: tuple[str, ...] | list[str] | str = ()):
        super().__init__(message)
        self.message = message
        self.prints = (prints,) if isinstance(prints, str) else tuple(prints)

    def lines(self) -> list[str]:
        """What Go writes to stderr: the prints, then ``fatal error: <message>``."""
        return [*self.prints, f"fatal error: {self.message}"]

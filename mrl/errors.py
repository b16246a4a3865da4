"""The one exception type users see: a one-line message naming the file, field or key at fault."""


class MRLError(Exception):
    """Bad input or configuration. The CLI prints the message on one line and exits non-zero."""

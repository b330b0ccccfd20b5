"""The one exception type that means "the user asked for something we cannot do".

Library code raises :class:`LandscapeError` with a message that says what went wrong
and what to do; the CLI turns it into a one-line message and exit status 2.
Anything else that escapes is a bug and keeps its traceback.
"""


class LandscapeError(Exception):
    """A user-facing error: bad input, a bad file, an impossible option."""

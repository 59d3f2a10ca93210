"""User-facing errors: bad input that the CLI reports as one line and exit code 2."""


class MonoscopeError(Exception):
    """Raised for input a user can fix (missing file, bad shape, uncached model); never for bugs."""

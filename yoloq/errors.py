"""The one exception type users see: a one-line message that names the problem and the fix."""


class UserError(Exception):
    """Bad input (config, data, weights). Scripts print it as one line and exit with code 2."""

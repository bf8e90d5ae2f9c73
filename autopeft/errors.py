"""The one exception type for user mistakes: the CLI prints it as a single line, no traceback."""


class AutoPeftError(Exception):
    """Bad input or an unusable environment, explained in one line for the user."""


class MethodNotApplicable(AutoPeftError):
    """A method cannot be applied to this architecture; the search skips it, saying why."""

"""The one exception type for user mistakes: the CLI prints it as a single line, no traceback."""


class AutoPeftError(Exception):
    """Bad input or an unusable environment, explained in one line for the user."""


class MethodNotApplicable(AutoPeftError):
    """A method cannot be applied to this architecture; the search skips it, saying why."""


class SearchInterrupted(AutoPeftError):
    """The search was stopped (Ctrl+C) before its trials finished; the CLI exits with 130.

    Finished trials are kept and the unfinished ones are marked failed, so re-running the same
    command continues the study.
    """


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite: that trial fails with this reason, not the search.

    Not an AutoPeftError: it is an outcome of one candidate, not a mistake in the user's input.
    """


class EmptyDelta(RuntimeError):
    """A candidate stores nothing beyond the task head: that trial fails with this reason.

    Such a trial is a trained head, not a result of its method (a Threshold-Mask that flipped no
    mask, an S-BitFit that chose no bias vector), and being the cheapest it would otherwise land
    on the Pareto front. Not an AutoPeftError, like TrainingDiverged.
    """

"""The one exception type for user mistakes.

Anything raised as :class:`MlmAdaptError` is the user's to fix (a bad path, an
option out of range, unusable data or model): the CLI prints it as a single
``error: ...`` line and exits with status 2. Every other exception is a bug and
keeps its traceback.
"""


class MlmAdaptError(Exception):
    """A problem with the user's input, with a message that says what to do."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped training after a checkpoint was written; the CLI exits 130."""

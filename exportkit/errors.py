"""Errors that are the user's to fix: the entry point prints them without a traceback."""


class ExportkitError(Exception):
    """Bad input (config, checkpoint, export directory): a clear message, exit 1."""


class ConfigError(ExportkitError):
    """A composed config whose values contradict each other or name missing files."""


class CheckpointError(ExportkitError):
    """The checkpoint cannot be found, read, or does not fit the network."""


class ExportError(ExportkitError):
    """The export could not be written or did not verify; nothing was published."""


# What TF 2.x's graph-mode Session wraps around the op's own message: a
# heading and the Python stack where the failing node was defined.
_TF_WRAPPER = ("Graph execution error:", "Detected at node ", "Node: ", "File ", "[[{{node ")


def first_line(error: BaseException) -> str:
    """The gist of an error (TF's OpError messages run to many lines)."""
    text = (getattr(error, "message", None) or str(error)).strip()
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_TF_WRAPPER)]
    return lines[0] if lines else type(error).__name__


class PublishedButIncomplete(ExportkitError):
    """A version went live, then the run failed or was interrupted: the run reports the
    version (``result``) with the error, never "nothing was published"."""

    def __init__(self, message: str, *, result: dict, interrupted: bool) -> None:
        super().__init__(message)
        self.result = result
        self.interrupted = interrupted

"""Errors that are the user's to fix: the entry point prints them without a traceback."""


class ExportkitError(Exception):
    """Bad input (config, checkpoint, export directory): a clear message, exit 1."""


class CheckpointError(ExportkitError):
    """The checkpoint cannot be found, read, or does not fit the network."""


class ExportError(ExportkitError):
    """The export could not be written or did not verify; nothing was published."""


def first_line(error: BaseException) -> str:
    """The gist of an error (TF's OpError messages run to many lines)."""
    text = (getattr(error, "message", None) or str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__

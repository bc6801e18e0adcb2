"""Errors that are the user's to fix: the entry point prints them without a traceback."""


class ExportkitError(Exception):
    """Bad input (config, checkpoint, export directory): a clear message, exit 1."""


class CheckpointError(ExportkitError):
    """The checkpoint cannot be found, read, or does not fit the network."""


class ExportError(ExportkitError):
    """The export could not be written or did not verify; nothing was published."""

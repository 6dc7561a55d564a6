"""The one exception type users see."""


class MedpfgmError(Exception):
    """A user-facing error: one line naming the bad value and what is allowed.

    The CLI prints it on one line and exits non-zero; nothing else is turned into a traceback-free
    message on purpose, so that real bugs stay visible (with ``MEDPFGM_DEBUG=1``).
    """

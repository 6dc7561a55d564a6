"""The one exception type users see."""


class MedpfgmError(Exception):
    """A user-facing error: one line naming the bad value and what is allowed.

    The CLI prints it on one line and exits non-zero; nothing else is turned into a traceback-free
    message on purpose, so that real bugs stay visible (with ``MEDPFGM_DEBUG=1``).
    """


class Interrupted(MedpfgmError):
    """The user stopped a command (Ctrl-C, SIGTERM): exit status 130, as shells expect."""

    exit_code = 130


def shorten(text: str, width: int) -> str:
    """The first line of ``text`` cut to at most ``width`` characters at a word boundary, '…' marking a cut."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= width:
        return line
    cut = line[: width - 1]
    boundary = max(cut.rfind(" "), cut.rfind("("))  # a word ends before a space or an opening bracket
    if boundary > 0:
        cut = cut[:boundary]
    return cut.rstrip(" ,;:(") + "…"

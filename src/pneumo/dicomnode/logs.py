"""The node's log holds no patient attribute and no traceback: library messages become one line without values.

Why: highdicom's warnings quote PatientName and ReferringPhysicianName ("The string "DOE^JOHN" is
unlikely to represent ..."), pydicom's quote element values and print tracebacks for damaged JPEG
data, and pynetdicom logs a traceback when a connection drops mid-PDU. docs/pacs.md promises no
patient attribute in the log, and an operator needs one line per event, not a stack. So every record
that does not come from pneumo itself is rewritten to "<library> <level>: <kind of message>", its
arguments and exception dropped; Python warnings are routed into logging (``captureWarnings``)
and reduced to their category and the library that raised them; an uncaught exception in a thread
becomes one line with its type.
"""

from __future__ import annotations

import logging
import re
import threading

_WARNING = re.compile(r"(?:site-packages|dist-packages)/([A-Za-z0-9_]+)/.*?:\d+: (\w+):")
# pynetdicom's own messages say what happened to the connection (no dataset values at WARNING and above).
_KEEP_FIRST_LINE = ("pynetdicom",)


def summary(record: logging.LogRecord) -> str:
    """One line for a library record, with no value that may come from a file or a network peer."""
    if record.name == "py.warnings":
        m = _WARNING.search(str(record.msg) % record.args if record.args else str(record.msg))
        return f"{m.group(1)} {m.group(2)} (text withheld: it may quote patient data)" if m else \
            "library warning (text withheld: it may quote patient data)"
    top = record.name.split(".")[0]
    if top in _KEEP_FIRST_LINE:
        try:
            text = record.getMessage().splitlines()[0][:160]
        except Exception:  # noqa: BLE001 - a record whose args do not format
            text = "message"
        return f"{top} {record.levelname.lower()}: {text}"
    return f"{top} {record.levelname.lower()} (text withheld: it may quote file contents)"


class Redact(logging.Filter):
    """Rewrites every non-pneumo record to :func:`summary` and drops its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pneumo"):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            return True
        record.msg, record.args = summary(record), ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def install() -> None:
    """Apply :class:`Redact` to every handler of the root logger, and route warnings and thread errors there."""
    logging.captureWarnings(True)
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, Redact) for f in handler.filters):
            handler.addFilter(Redact())
    log = logging.getLogger("pneumo.dicomnode")

    def one_line(args: threading.ExceptHookArgs) -> None:
        log.error("thread %s stopped: %s", getattr(args.thread, "name", "?"), args.exc_type.__name__)

    threading.excepthook = one_line

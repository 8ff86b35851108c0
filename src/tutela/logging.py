"""Log set-up: one line per event, no request bodies, query strings, secrets or traces."""

from __future__ import annotations

import logging
import sys


class NoTraces(logging.Filter):
    """Turns any record carrying an exception into one line naming its type only.

    Exception messages and tracebacks can hold personal data (a database error quotes
    its statement); the exception's type is enough to find the fault.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(NoTraces())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints query strings; Tutela's own request log does not.
    logging.getLogger("uvicorn.access").disabled = True

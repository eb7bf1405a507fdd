"""The one creation time of a run, for the formats that must carry one (define.xml
``CreationDateTime``, Dataset-JSON ``datasetJSONCreationDateTime``, the XPT header stamps,
ODM ``CreationDateTime``).

It is the real time by default; ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention:
seconds since 1970-01-01 UTC, an integer) fixes it, so the same input gives the same bytes.
A malformed value stops the run rather than being ignored (as that convention asks).
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from trialbridge.converters.core.issues import TrialbridgeError

ENV = "SOURCE_DATE_EPOCH"
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def creation_time() -> datetime:
    """``SOURCE_DATE_EPOCH`` if set, else now; UTC, whole seconds."""
    text = os.environ.get(ENV)
    if text is None or text == "":
        seconds = int(time.time())
    else:
        if not text.strip().isdigit():
            raise TrialbridgeError(f"{ENV}={text!r} is not a whole number of seconds since 1970-01-01 UTC")
        seconds = int(text.strip())
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise TrialbridgeError(f"{ENV}={text!r} is outside the dates this machine can represent") from None


def creation_datetime(when: datetime | None = None) -> str:
    """ISO 8601 in UTC with its designator, as xs:dateTime and Dataset-JSON take it:
    ``2026-12-06T20:41:07Z``."""
    return (when or creation_time()).strftime("%Y-%m-%dT%H:%M:%SZ")


def xpt_stamp(created: str | None = None) -> bytes:
    """The XPORT header stamp ``ddMMMyy:hh:mm:ss`` of an ISO 8601 creation time (UTC)."""
    when = datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S") if created else creation_time()
    return f"{when.day:02d}{_MONTHS[when.month - 1]}{when.year % 100:02d}:{when:%H:%M:%S}".encode("ascii")

"""Dates that cannot all be true: one subject's records checked against the person's birth
and death, whatever the input was (records CSV/JSON, ODM, FHIR, SDTM read back).

Run once per subject where the records of every source meet, before any target is written
(:func:`trialbridge.converters.engine.process_group`), so ``--to sdtm``, ``--to records``
and ``--to fhir`` all see the same findings.  Each is a warning naming the record and the
field: the data are converted as given (the site must correct them; trialbridge cannot know
which of the two dates is wrong).

* ``CHRONO-BIRTH-AFTER-CONSENT`` — the subject's birth date is after their informed consent.
* ``CHRONO-BEFORE-BIRTH`` — a record's date (a dose, an adverse event, a visit, a result,
  a disposition, the death date) is before the subject's birth.
* ``CHRONO-AFTER-DEATH`` — a dose, an adverse event's start, a visit or a result is after
  the subject's death (a disposition on or after the death is not: it records the death).

Dates are compared at their common precision with :func:`iso8601.compare`: a dose on
``2020-07-06`` is not known to be after a death at ``2020-07-06T08:00``; times with offsets
are compared as instants.
"""
from __future__ import annotations

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.records import Records, where

# the record fields that say when something happened to the person (ends are left out: an
# adverse event or a visit "ending" on the death date is how sites record it)
EVENT_DATES = {
    "exposure": ("start",),
    "adverse_event": ("start",),
    "visit": ("start",),
    "lab_result": ("collected",),
    "vital_sign": ("collected",),
    "cell_phenotype": ("collected",),
    "disposition": ("date",),
}
NOT_AFTER_DEATH = ("disposition",)
WORDS = {"exposure": "dose", "adverse_event": "adverse event", "visit": "visit", "lab_result": "lab result",
         "vital_sign": "vital sign", "cell_phenotype": "cell phenotype result", "disposition": "disposition"}


def check(records: Records, log) -> None:
    """Warn about every impossible pair of dates among one subject's (or several subjects')
    records."""
    subjects = {s.get("subject_id"): s for s in records["subject"]}
    for s in subjects.values():
        birth, consent, death = s.get("birth_date"), s.get("consent_date"), s.get("death_date")
        if birth and consent and iso8601.after(birth, consent):
            log.warning("CHRONO-BIRTH-AFTER-CONSENT", f"birth date {birth} is after informed consent on {consent}",
                        **where(s, "birth_date"), value=birth)
        if birth and death and iso8601.before(death, birth):
            log.warning("CHRONO-BEFORE-BIRTH", f"death date {death} is before the birth date {birth}",
                        **where(s, "death_date"), value=death)
    for name, fields in EVENT_DATES.items():
        for row in records[name]:
            s = subjects.get(row.get("subject_id"))
            if s is None:
                continue
            birth, death = s.get("birth_date"), s.get("death_date")
            for field_name in fields:
                when = row.get(field_name)
                if not when:
                    continue
                if birth and iso8601.before(when, birth):
                    log.warning("CHRONO-BEFORE-BIRTH", f"{WORDS[name]} dated {when} is before the subject's birth on "
                                f"{birth}", **where(row, field_name), value=when)
                elif death and name not in NOT_AFTER_DEATH and iso8601.after(when, death):
                    log.warning("CHRONO-AFTER-DEATH", f"{WORDS[name]} dated {when} is after the subject's death on "
                                f"{death}", **where(row, field_name), value=when)

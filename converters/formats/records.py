"""Read and write the internal record files a site fills in.

A records folder holds one file per record type: ``subjects.csv`` (or ``.json`` — an
array of objects — or ``.ndjson``), ``exposures.csv`` … as named by each schema's
``x-file``.  Every value is text as written; empty cells are "not recorded".  Numbers
in JSON input keep their exact text (``1.30`` stays ``1.30``, design rule 5a).

Bad rows never stop the run: a row that fails its schema (REC-SCHEMA), repeats an
earlier row exactly (REC-DUPLICATE) or names a subject that does not exist
(REC-ORPHAN) is rejected with an issue naming file, row, field and value; everything
else goes on.  Every row read is counted in the log's accounting.
"""
from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator

from trialbridge.converters.core import iso8601
from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.files import atomic_open, output_file
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import RECORD_ORDER, Records, RecordType, public, record_types

SUFFIXES = (".csv", ".json", ".ndjson")


def csv_encoding(path: Path, log: IssueLog | None = None) -> str:
    """UTF-8 (with or without BOM) as the format says; a file that is not valid UTF-8 was
    most likely saved by a spreadsheet in Windows-1252: read it so, and say so."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for _ in fh:
                pass
        return "utf-8-sig"
    except UnicodeDecodeError as exc:
        if log is not None:
            log.warning("REC-ENCODING", f"file is not UTF-8 ({exc.reason} at byte {exc.start}); read as Windows-1252 "
                        "— check accented characters", file=str(path))
        return "cp1252"


def _iter_csv(path: Path, encoding: str = "utf-8-sig") -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for n, row in enumerate(reader, start=1):
            extra = row.pop(None, None)
            clean = {k: (v or "").strip() for k, v in row.items()}
            if extra:
                clean["_extra_cells"] = extra
            yield n, clean, header


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value).strip()


def _as_text(value: Any) -> Any:
    """Numbers as the text they were written with (the codec keeps it, design rule 5a)."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return jsoncodec.number_text(value)
    if isinstance(value, dict):
        return {k: _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    return value


def _row(obj: Any) -> tuple[Any, list[str]]:
    if isinstance(obj, dict):
        return {k: _as_text(v) for k, v in obj.items()}, list(obj)
    return obj, []


def _iter_json(path: Path, key: str | None) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    # Numbers stay as the text they were written with; a value that is not an object is
    # yielded as it is and rejected by the caller (REC-SCHEMA "row is not an object").
    if path.suffix == ".ndjson":
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    yield (n, *_row(jsoncodec.loads(line)))
        return
    data = jsoncodec.loads(path.read_bytes())
    if isinstance(data, dict) and key is not None and key in data:
        data = data[key]
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON array of objects (or an object with the key {key!r})")
    for n, obj in enumerate(data, start=1):
        yield (n, *_row(obj))


def find_record_files(folder: Path, log: IssueLog) -> dict[str, Path]:
    found: dict[str, Path] = {}
    types = record_types()
    for name in RECORD_ORDER:
        candidates = [folder / f"{types[name].file}{s}" for s in SUFFIXES if (folder / f"{types[name].file}{s}").exists()]
        if len(candidates) > 1:
            log.warning("REC-SEVERAL-FILES", f"several files for {types[name].file}; reading {candidates[0].name} only, "
                        f"ignoring {', '.join(c.name for c in candidates[1:])}", file=str(candidates[0]))
        if candidates:
            found[name] = candidates[0]
    return found


def is_records_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f"{record_types()['subject'].file}{s}").exists() for s in SUFFIXES)


class RecordStream:
    """The rows of every record file in a folder, as ``(record type, row)``, subjects first
    (the rows of other files are checked against the subject ids); ``study_id`` is known
    once the subjects file has been read.  Bad rows are rejected with issues."""

    def __init__(self, folder: Path, log: IssueLog, *, dedupe: bool = True):
        self.dedupe = dedupe  # False: exact repeats are left to the engine (per subject)
        folder = Path(folder)
        if not folder.is_dir():
            raise TrialbridgeError(f"{folder}: not a folder of record files")
        self.folder = folder
        self.log = log
        self.files = find_record_files(folder, log)
        if "subject" not in self.files:
            raise TrialbridgeError(f"{folder}: no subjects.csv / subjects.json found — not a records folder")
        known = {p.name for p in self.files.values()} | {"README.md", "README.txt"}
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.name not in known and not p.name.startswith("."):
                log.info("REC-IGNORED-FILE", "file is not a record file of any known type; not read", file=str(p))
        self.study_id: str | None = None

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        types = record_types()
        subject_ids: set[str] | None = None
        log = self.log
        for name in RECORD_ORDER:
            if name not in self.files:
                continue
            if name != "subject":
                for row in _read_file(self.files[name], types[name], log, subject_ids, dedupe=self.dedupe):
                    yield name, row
                continue
            ids: set[str] = set()
            study_ids: set[str] = set()
            for row in _read_file(self.files[name], types[name], log, None, dedupe=self.dedupe):
                ids.add(row["subject_id"])
                study_ids.add(row["study_id"])
                yield name, row
            if not ids:
                counts = log.accounting.get(str(self.files[name]), {})
                first = next((i for i in log.issues if i.severity == "error"), None)
                raise TrialbridgeError(
                    f"{self.files[name]}: no subject row could be read ({counts.get('read', 0)} row(s) read, "
                    f"{counts.get('rejected', 0)} rejected" + (f"; first: row {first.record} {first.field}: "
                                                              f"{first.message}" if first else "") + ")")
            subject_ids = ids
            ordered = sorted(study_ids)
            self.study_id = ordered[0]
            if len(ordered) > 1:
                log.error("REC-SEVERAL-STUDIES", f"subjects name several studies ({', '.join(ordered)}); "
                          f"converting with {ordered[0]}", file=str(self.files[name]), field="study_id")


def read_records(folder: Path, log: IssueLog) -> Records:
    """Every record file in ``folder`` held in memory (tests, small inputs, the subjects of
    ``--link-subjects``); the engine streams :class:`RecordStream` instead."""
    stream = RecordStream(folder, log)
    records = Records()
    for name, row in stream:
        records.rows[name].append(row)
    records.study_id = stream.study_id
    return records


def reject_repeats(rows: list[dict[str, Any]], log: IssueLog) -> list[dict[str, Any]]:
    """The rows without exact repeats of an earlier row (REC-DUPLICATE, counted rejected): one
    subject's rows of one record type, in input order."""
    seen: dict[tuple, Any] = {}
    out = []
    for row in rows:
        ident = tuple(sorted((k, v) for k, v in row.items() if k != "_where"))
        loc = row.get("_where") or {}
        if ident in seen:
            log.warning("REC-DUPLICATE", f"row repeats row {seen[ident]} exactly; second copy not converted",
                        file=loc.get("file"), record=loc.get("record"))
            log.count_row(loc.get("file"), "rejected")
            continue
        seen[ident] = loc.get("record")
        out.append(row)
    return out


def _read_file(path: Path, rtype: RecordType, log: IssueLog, subject_ids: set[str] | None, *,
               dedupe: bool = True) -> Iterator[dict[str, Any]]:
    fname = str(path)
    fields = set(rtype.fields)
    unknown_counts: dict[str, int] = {}

    def shaped() -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows of the file as {field: value}; malformed rows rejected here."""
        source = _iter_csv(path, csv_encoding(path, log)) if path.suffix == ".csv" else _iter_json(path, rtype.file)
        for n, raw, _header in source:
            problem = None
            if not isinstance(raw, dict):
                problem = ("row is not an object", None)
            elif "_extra_cells" in raw:
                problem = (f"row has {len(raw['_extra_cells'])} more cells than the header",
                           "|".join(raw.pop("_extra_cells")))
            if problem:
                log.count_row(fname, "read")
                log.error("REC-SCHEMA", problem[0], file=fname, record=n, value=problem[1])
                log.count_row(fname, "rejected")
                continue
            row = {}
            for k, v in raw.items():
                if k in fields:
                    row[k] = v
                elif _text(v):
                    unknown_counts[k] = unknown_counts.get(k, 0) + 1
            yield n, row

    try:
        yield from accept_rows(shaped(), rtype, log, fname, subject_ids, dedupe=dedupe)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise TrialbridgeError(f"{fname}: cannot read: {exc}") from exc
    for col, count in sorted(unknown_counts.items()):
        log.warning("REC-UNKNOWN-COLUMN", f"column {col!r} is not a field of {rtype.name} records; "
                    f"its {count} non-empty value(s) were not converted", file=fname, field=col, value=count)


def accept_rows(rows: Iterable[tuple[Any, dict[str, Any]]], rtype: RecordType, log: IssueLog, fname: str,
                subject_ids: set[str] | None, *, account: str | None = None, dedupe: bool = True
                ) -> Iterator[dict[str, Any]]:
    """The one row check every records reader (CSV/JSON here, ODM in ``odm_io``) applies.

    ``rows`` yields (record reference, {field: value}); values are stripped and empty ones
    dropped; a row failing its schema or calendar (REC-SCHEMA), repeating an earlier row
    exactly (REC-DUPLICATE) or naming an unknown subject (REC-ORPHAN) is rejected with an
    issue; accepted rows get ``_where``.  Rows are counted under ``account`` (default the file).
    ``dedupe=False`` leaves exact repeats to the caller: the engine finds them one subject at a
    time (:func:`reject_repeats`), so no set of every row is held."""
    account = account or fname
    seen_rows: dict[tuple, Any] = {}
    for ref, raw_row in rows:
        log.count_row(account, "read")
        row = {k: text for k, v in raw_row.items() if (text := _text(v))}
        # fast compiled check; the exact validator only for rows it rejects (design rule 5)
        errors = [] if rtype.fast_validator.is_valid(row) else list(rtype.validator.iter_errors(row))
        bad = {e.path[0] for e in errors if e.path}
        errors += [e for e in _calendar_errors(rtype, row) if e.path[0] not in bad]
        if errors:
            for err in errors:
                field = err.path[0] if err.path else _field_from_required(err)
                log.error("REC-SCHEMA", f"{field}: {_describe(err)}; row not converted", file=fname, record=ref,
                          field=field, value=row.get(field) if field else None)
            log.count_row(account, "rejected")
            continue
        ident = tuple(sorted(row.items())) if dedupe else None
        if dedupe and ident in seen_rows:
            log.warning("REC-DUPLICATE", f"row repeats row {seen_rows[ident]} exactly; second copy not converted",
                        file=fname, record=ref)
            log.count_row(account, "rejected")
            continue
        if dedupe:
            seen_rows[ident] = ref
        if subject_ids is not None and row.get("subject_id") not in subject_ids:
            log.error("REC-ORPHAN", "subject_id is not in the subjects file; row not converted", file=fname,
                      record=ref, field="subject_id", value=row.get("subject_id"))
            log.count_row(account, "rejected")
            continue
        row["_where"] = {"file": fname, "record": ref}
        yield row


class _CalendarError:
    """A value in ISO 8601 form that is not a real date or time (2020-13-45)."""

    validator = "calendar"

    def __init__(self, field: str, value: str):
        self.path = [field]
        self.instance = value
        self.message = f"{value!r} is not a real calendar date/time"


def _calendar_errors(rtype: RecordType, row: dict[str, Any]) -> list:
    """Record dates in the hub's grammar: no unknown parts ("2003---15") and no intervals,
    so every record date is also a valid FHIR date/time prefix."""
    out = []
    for name, prop in rtype.schema["properties"].items():
        if prop.get("x-iso8601") and name in row and not iso8601.is_valid(row[name], intervals=False,
                                                                           unknown_parts=False):
            out.append(_CalendarError(name, row[name]))
    return out


def _field_from_required(err) -> str | None:
    if err.validator == "required":
        missing = [f for f in err.validator_value if f not in err.instance]
        return missing[0] if missing else None
    return None


def _describe(err) -> str:
    if err.validator == "pattern":
        return f"{err.instance!r} is not in the expected form"
    if err.validator == "required":
        return "required value missing"
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(repr(v) for v in err.validator_value)}"
    return err.message


def write_record_file(name: str, rows: Iterable[dict[str, Any]], folder: Path) -> Path:
    """One CSV of record type ``name`` (header in schema order) from rows already in their
    final order; streamed, written atomically."""
    rtype = record_types()[name]
    path = output_file(folder, f"{rtype.file}.csv")
    with atomic_open(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=rtype.fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in rtype.fields})
    return path


def write_records(records: Records, folder: Path, log: IssueLog) -> list[Path]:
    """Write one CSV per record type (header in schema order, rows sorted by key)."""
    written = []
    for name, rows in records.items():
        if not rows and name != "subject":
            continue
        key = record_types()[name].key
        ordered = sorted((public(r) for r in rows), key=lambda r: tuple(r.get(k, "") for k in key))
        written.append(write_record_file(name, ordered, folder))
    return written

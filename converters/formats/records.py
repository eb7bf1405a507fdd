"""Read and write the internal record files a site fills in.

A records folder holds one file per record type: ``subjects.csv`` (or ``.json`` — an
array of objects — or ``.ndjson``), ``exposures.csv`` … as named by each schema's
``x-file``.  Every value is text as written; empty cells are "not recorded".  Numbers
in JSON input keep their exact text (``1.30`` stays ``1.30``, design rule 5a).

Bad rows never stop the run: a row that fails its schema (REC-SCHEMA), repeats an
earlier row exactly (REC-DUPLICATE) or repeats its key with other values
(REC-DUPLICATE-KEY), or names a subject that does not exist (REC-ORPHAN) is rejected with
an issue naming file, row, field and value; everything else goes on.  Every row read is
counted in the log's accounting.

Bad files and bad lines are findings too, never the end of the run (only a subjects file
with no usable row stops it, :class:`NoSubjects`, exit 1):

* the encoding is found before reading (:func:`text_encoding`: byte order marks, UTF-16
  without one, UTF-8, else Windows-1252 with REC-ENCODING; a workbook or binary file is
  REC-NOT-TEXT);
* CSV is read record by record with bounded memory: a cell over csv's field limit, a line
  over :data:`MAX_LINE`, a broken quote (REC-CSV) or a row of the wrong width
  (REC-RAGGED-ROW) rejects that row, naming its line; a broken row that swallowed the lines
  after it (a quote never closed) is rejected alone and those lines are read again;
  repeated header names are read where their cells agree (REC-HEADER, REC-COLUMN-CONFLICT);
* a JSON file that cannot be read as an array of records is one REC-JSON finding naming
  the file; an NDJSON line that is not JSON rejects that line's row only (REC-JSON, the
  line number as record).
"""
from __future__ import annotations

import codecs
import csv
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator

from trialbridge.converters.core import iso8601
from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.files import atomic_open, output_file
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import RECORD_ORDER, Records, RecordType, public, record_types


class NoSubjects(TrialbridgeError):
    """The subjects file gave no row that could be converted: nothing else can be (exit 1, a
    data problem; the findings say why)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=1)

SUFFIXES = (".csv", ".json", ".ndjson")


# Limits that keep memory bounded whatever a file holds.  A CSV field longer than csv's own
# limit (131,072 characters), a physical line longer than MAX_LINE characters or an NDJSON line
# longer than MAX_JSON_LINE rejects that row only; the rest of the file is read.
MAX_LINE = 1 << 20
MAX_JSON_LINE = 16 << 20
MAX_RESTARTS = 100  # re-reads after broken quotes, per file; then the rest of the file is refused


def _cp1252_undefined(exc: UnicodeDecodeError):
    """Bytes Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) read as the code
    point of the same number, as Windows itself does, so every byte gives a character."""
    return "".join(chr(b) for b in exc.object[exc.start:exc.end]), exc.end


codecs.register_error("trialbridge-cp1252", _cp1252_undefined)


class NotText(Exception):
    """A record file that is not text at all (a workbook, a ZIP, binary data)."""


def _utf16_without_bom(head: bytes) -> str | None:
    pairs = head[: len(head) // 2 * 2]
    if len(pairs) < 4:
        return None
    even, odd = pairs[0::2], pairs[1::2]
    if odd.count(0) > len(odd) * 0.9 and even.count(0) < len(even) * 0.1:
        return "utf-16-le"
    if even.count(0) > len(even) * 0.9 and odd.count(0) < len(odd) * 0.1:
        return "utf-16-be"
    return None


def _first_bad_byte(path: Path, encoding: str) -> tuple[int, str] | None:
    """(byte offset, reason) of the first byte that does not decode, streaming; None if all do."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 16)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                skipped = len(codecs.BOM_UTF8) if encoding == "utf-8-sig" else 0  # it counts after the BOM
                return offset - pending + exc.start + skipped, exc.reason
            if not chunk:
                return None
            offset += len(chunk)


def csv_encoding(path: Path) -> str:
    """The encoding an SDTM CSV is read with: UTF-8 (a byte order mark or not) when it is
    valid UTF-8, else Windows-1252 (what spreadsheets save; the SDTM reader says so)."""
    return "utf-8-sig" if _first_bad_byte(path, "utf-8") is None else "cp1252"


def text_encoding(path: Path, log: IssueLog | None = None) -> str:
    """The encoding a record file is read with (``name`` or ``name/replace``), said in an issue
    when it is not plain UTF-8.

    A byte order mark says it (UTF-8, UTF-16, UTF-32); UTF-16 without one shows as every
    other byte zero; a file that is valid UTF-8 is UTF-8; anything else was most likely saved
    by a spreadsheet in Windows-1252, read so with a warning.  A file that a byte order mark
    says is Unicode but that does not decode is read with U+FFFD for the bad bytes, with a
    warning naming the first.  A ZIP (an Excel workbook renamed .csv) or a file with NUL
    bytes is not text: :class:`NotText`."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    fname = str(path)
    if head[:4] in (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE):
        encoding, note = "utf-32", "UTF-32 (byte order mark)"
    elif head.startswith(codecs.BOM_UTF8):
        encoding, note = "utf-8-sig", None
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, note = "utf-16", "UTF-16 (byte order mark)"
    elif (guess := _utf16_without_bom(head)) is not None:
        encoding, note = guess, f"{guess.upper()} without a byte order mark (every other byte zero)"
    else:
        if head.startswith(b"PK\x03\x04"):
            raise NotText("a ZIP archive (an Excel workbook?), not a text file: save it as CSV (UTF-8)")
        if b"\x00" in head:
            raise NotText(f"binary data (a NUL byte at byte {head.index(0)}), not a text file")
        bad = _first_bad_byte(path, "utf-8")
        if bad is None:
            return "utf-8"
        if log is not None:
            log.warning("REC-ENCODING", f"file is not UTF-8 ({bad[1]} at byte {bad[0]}); read as Windows-1252 — "
                        "check accented characters", file=fname)
        return "cp1252"
    bad = _first_bad_byte(path, encoding)
    if bad is not None:
        if log is not None:
            log.warning("REC-ENCODING", f"file is {note or 'UTF-8 (byte order mark)'} but does not decode ({bad[1]} at "
                        f"byte {bad[0]}): bad bytes read as U+FFFD — check the values they fall in", file=fname,
                        value=encoding)
        return f"{encoding}/replace"
    if note is not None and log is not None:
        log.info("REC-ENCODING", f"file is {note}; read as such", file=fname, value=encoding)
    return encoding


def _open_text(path: Path, encoding: str, newline: str | None):
    """Open a record file as text with what :func:`text_encoding` chose."""
    name, _, errors = encoding.partition("/")
    if name == "cp1252":
        errors = "trialbridge-cp1252"
    return open(path, encoding=name, errors=errors or "strict", newline=newline)


class _LineTooLong(Exception):
    def __init__(self, line: int, limit: int):
        super().__init__(f"line {line} is longer than {limit:,} characters")
        self.line = line


class _Lines:
    """The physical lines of a text file, counted; a line longer than ``limit`` characters is
    never held: it is skipped in pieces and :class:`_LineTooLong` raised in its place (the
    next call goes on with the following line)."""

    def __init__(self, fh, limit: int):
        self.fh, self.limit, self.count = fh, limit, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.fh.readline(self.limit)
        if not line:
            raise StopIteration
        self.count += 1
        if len(line) >= self.limit and not line.endswith(("\n", "\r")):
            while (more := self.fh.readline(self.limit)) and not more.endswith(("\n", "\r")):
                pass
            raise _LineTooLong(self.count, self.limit)
        return line


class BadRow:
    """A row that could not be read as cells or values: rejected with ``code`` and ``message``."""

    __slots__ = ("code", "message", "field", "value")

    def __init__(self, code: str, message: str, field: str | None = None, value: Any = None):
        self.code, self.message, self.field, self.value = code, message, field, value


def csv_delimiter(path: Path, encoding: str) -> str:
    """``,`` as the format says, unless the first line holds no comma and splits into several
    names on ``;`` (what Excel writes where the decimal mark is a comma) or on a tab."""
    with _open_text(path, encoding, "") as fh:
        first = fh.readline(MAX_LINE)
    if "," in first:
        return ","
    for candidate in (";", "\t"):
        if len([c for c in first.split(candidate) if c.strip()]) >= 2:
            return candidate
    return ","


def _csv_records(path: Path, encoding: str, delimiter: str = ","
                 ) -> Iterator[tuple[int, int, list[str] | Exception]]:
    """(first line, last line, cells or the error) for every CSV record, blank lines left out.

    A record that fails (a broken quote, a field over the limit, a line over MAX_LINE) is
    given as its error.  When it spanned several lines — a quote opened and never closed
    swallows the lines after it — reading starts again on the line after its first, so those
    lines are read as the rows they are (at most MAX_RESTARTS times a file).  The caller
    sends ``True`` for a record it found broken the same way (ragged over several lines)."""
    skip = 0
    restarts = 0
    while True:
        with _open_text(path, encoding, "") as fh:
            lines = _Lines(fh, MAX_LINE)
            while lines.count < skip:
                try:
                    next(lines)
                except StopIteration:
                    return
                except _LineTooLong:
                    pass
            reader = csv.reader(lines, strict=True, delimiter=delimiter)
            again = None
            while True:
                first = lines.count + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except (csv.Error, _LineTooLong) as exc:
                    result: list[str] | Exception = exc
                else:
                    if not cells or (len(cells) == 1 and not cells[0].strip()):
                        continue
                    result = cells
                can_restart = lines.count > first and restarts < MAX_RESTARTS
                broken = yield first, lines.count, result, isinstance(result, Exception) and can_restart
                if broken is not None:
                    yield can_restart  # the value of send(); the loop goes on at the caller's next()
                if (isinstance(result, Exception) or broken) and can_restart:
                    restarts += 1
                    again = first
                    break
            skip = again


def _csv_rows(path: Path, encoding: str, delimiter: str = ","
              ) -> Iterator[tuple[int, dict[str, Any] | BadRow, list[str]]]:
    """(row number, {column: cell} or BadRow, header) for every data row of a CSV file.

    Row numbers count data records (header excluded, blank lines not counted), as in the
    issue log.  Duplicated column names are read only when their cells agree; columns with
    no name keep their place as ``(column N)`` so that values under them are reported."""
    records = _csv_records(path, encoding, delimiter)
    header: list[str] | None = None
    n = 0
    for first, last, cells, again in records:
        lines = _span(first, last)
        if header is None:
            if isinstance(cells, Exception):
                yield 0, BadRow("REC-HEADER", f"the header ({lines}) cannot be read: {cells}; file not read"), []
                return
            header = [h.strip() or f"(column {i})" for i, h in enumerate(cells, start=1)]
            unnamed = [not h.strip() for h in cells]
            positions: dict[str, list[int]] = {}
            for i, h in enumerate(header):
                positions.setdefault(h, []).append(i)
            repeated = {h: p for h, p in positions.items() if len(p) > 1}
            yield -1, {"_repeated": repeated}, header
            continue
        n += 1
        if isinstance(cells, Exception):
            if isinstance(cells, _LineTooLong):
                reason = str(cells)
            elif "field limit" in str(cells):
                reason = f"a cell is longer than {csv.field_size_limit():,} characters ({lines})"
            elif "unexpected end of data" in str(cells):
                reason = f"a quote opened on line {first} is never closed"
            else:
                reason = f"the cells cannot be read ({cells}; {lines})"
            if last > first:
                reason += (f"; {_span(first + 1, last)} read again as rows of their own" if again else
                           f"; {_span(first + 1, last)} not read (more than {MAX_RESTARTS} broken rows in the file)")
            yield n, BadRow("REC-CSV", f"{reason}; row not converted"), header
            continue
        extra_blank = len(cells) > len(header) and not any(c.strip() for c in cells[len(header):])
        short_unnamed = len(cells) < len(header) and all(unnamed[len(cells):])  # "a,b," header, "1,2" rows
        if len(cells) != len(header) and not extra_blank and not short_unnamed:
            again = records.send(True) if last > first else False
            more = len(cells) - len(header)
            what = (f"{more} more cell(s) than the header" if more > 0 else
                    f"{-more} cell(s) fewer than the header (which value is missing cannot be told)")
            note = "" if last == first else f"; it spans lines {first}-{last}: a quote may not be closed — " + (
                f"{_span(first + 1, last)} read again as rows of their own" if again else
                f"{_span(first + 1, last)} not read (more than {MAX_RESTARTS} broken rows in the file)")
            yield n, BadRow("REC-RAGGED-ROW", f"row has {len(cells)} cells, {what}{note}; row not converted",
                            value=_shown(cells[len(header):]) if more > 0 else len(cells)), header
            continue
        if not repeated:  # the common case: one cell per name
            yield n, {h: c.strip() for h, c in zip(header, cells)} | (
                {h: "" for h in header[len(cells):]} if len(cells) < len(header) else {}), header
            continue
        row: dict[str, Any] = {}
        conflict = None
        for h, p in positions.items():
            if len(p) == 1:
                row[h] = cells[p[0]].strip() if p[0] < len(cells) else ""
                continue
            given = {cells[i].strip() for i in p if i < len(cells) and cells[i].strip()}
            if len(given) > 1 and conflict is None:
                conflict = h
            row[h] = given.pop() if len(given) == 1 else ""
        if conflict is not None:
            yield n, BadRow("REC-COLUMN-CONFLICT", f"column {conflict!r} appears {len(positions[conflict])} times "
                            "in the header and its cells differ in this row; row not converted", field=conflict), header
            continue
        yield n, row, header


def _span(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


def _shown(cells: list[str], limit: int = 200) -> str:
    """Extra cells as a finding's value: joined by ``|``, at most ``limit`` characters."""
    text = "|".join(cells)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number") \
        if value is not None else "null"


def _row(obj: Any) -> dict[str, Any] | BadRow:
    if not isinstance(obj, dict):
        return BadRow("REC-SCHEMA", f"row is not an object but a JSON {_kind(obj)}; row not converted")
    nested = next((k for k, v in obj.items() if isinstance(v, (dict, list))), None)
    if nested is not None:
        return BadRow("REC-SCHEMA", f"{nested}: a JSON {_kind(obj[nested])}, not a value; row not converted",
                      field=nested)
    return {k: _as_text(v) for k, v in obj.items()}


def _json_problem(exc: jsoncodec.JsonError) -> str:
    """The codec's message with its position as a column (rows are named by their line)."""
    return re.sub(r": line 1 column (\d+) \(char \d+\)", r" at column \1", str(exc))


def _iter_json(path: Path, key: str | None, encoding: str = "utf-8"
               ) -> Iterator[tuple[int, dict[str, Any] | BadRow, list[str]]]:
    """(row number, row or BadRow, []) of a JSON array / NDJSON file; row 0 with a BadRow
    when the file as a whole cannot be read.  NDJSON rows are numbered by their line."""
    if path.suffix == ".ndjson":
        with _open_text(path, encoding, None) as fh:
            lines = _Lines(fh, MAX_JSON_LINE)
            while True:
                try:
                    line = next(lines)
                except StopIteration:
                    return
                except _LineTooLong as exc:
                    yield lines.count, BadRow("REC-JSON", f"{exc}; row not converted"), []
                    continue
                if not line.strip():
                    continue
                try:
                    obj = jsoncodec.loads(line.strip().encode("utf-8"))
                except jsoncodec.JsonError as exc:
                    yield lines.count, BadRow("REC-JSON", f"line {lines.count} is not JSON ({_json_problem(exc)}); "
                                              "row not converted"), []
                    continue
                yield lines.count, _row(obj), []
    if encoding in ("utf-8", "utf-8-sig"):
        data = path.read_bytes()
        data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    else:
        with _open_text(path, encoding, None) as fh:
            data = fh.read().encode("utf-8", "surrogatepass")
    if not data.strip():
        yield 0, BadRow("REC-EMPTY-FILE", "file is empty: no records read"), []
        return
    try:
        doc = jsoncodec.loads(data)
    except jsoncodec.JsonError as exc:
        yield 0, BadRow("REC-JSON", f"file is not JSON that can be read ({_json_problem(exc)}); none of its "
                        "records converted"), []
        return
    if isinstance(doc, dict) and key is not None and key in doc:
        doc = doc[key]
    if not isinstance(doc, list):
        yield 0, BadRow("REC-JSON", f"file holds a JSON {_kind(doc)}, not an array of record objects (or an "
                        f"object with the key {key!r} holding one); none of its records converted"), []
        return
    for n, obj in enumerate(doc, start=1):
        yield n, _row(obj), []


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
                fname = str(self.files[name])
                counts = log.accounting.get(fname, {})
                first = next((i for i in log.issues if i.severity == "error" and i.file == fname), None)
                where = "" if first is None else " ".join(
                    x for x in (f"row {first.record}" if first.record not in (None, "") else "", first.field or "") if x)
                raise NoSubjects(
                    f"{fname}: no subject row could be read ({counts.get('read', 0)} row(s) read, "
                    f"{counts.get('rejected', 0)} rejected" + (f"; first: {first.code} {where + ': ' if where else ''}"
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


def _key_differs(rtype: RecordType, row: dict[str, Any], first: dict[str, Any]) -> str:
    """The fields (never their values: some identify a person) in which two rows of one key differ."""
    names = sorted(k for k in set(public(row)) | set(public(first)) if row.get(k) != first.get(k))
    return ", ".join(names)


def _key_of(rtype: RecordType, row: dict[str, Any]) -> tuple:
    return tuple(row.get(k, "") for k in rtype.key)


def _report_key(log: IssueLog, rtype: RecordType, row: dict[str, Any], first_ref: Any, first: dict[str, Any],
                fname: str | None, ref: Any) -> None:
    log.error("REC-DUPLICATE-KEY", f"same {', '.join(rtype.key)} as row {first_ref} but different "
              f"{_key_differs(rtype, row, first)}: which is right cannot be told; row {first_ref} is converted, "
              "this one is not", file=fname, record=ref, field=", ".join(rtype.key),
              value="|".join(_key_of(rtype, row)))


def check_subjects_path(path: Path) -> Path:
    """The subjects file a records folder or a file path names (``--link-subjects``); a path
    that is not there is named as given (usage error)."""
    path = Path(path)
    if path.is_dir():
        files = find_record_files(path, IssueLog())
        if "subject" not in files:
            raise TrialbridgeError(f"{path}: no subjects.csv / subjects.json / subjects.ndjson in this folder")
        return files["subject"]
    if not path.exists():
        raise TrialbridgeError(f"{path}: no such file or folder")
    if path.suffix not in SUFFIXES:
        raise TrialbridgeError(f"{path}: not a subjects file (.csv, .json or .ndjson)")
    return path


def read_subjects(path: Path, log: IssueLog) -> list[dict[str, Any]]:
    """The subject rows of a records folder or of one subjects file (any name), checked as a
    subjects file is."""
    file = check_subjects_path(path)
    return list(_read_file(file, record_types()["subject"], log, None))


def reject_repeats(rows: list[dict[str, Any]], log: IssueLog, rtype: RecordType | None = None
                   ) -> list[dict[str, Any]]:
    """The rows without repeats of an earlier row (counted rejected): one subject's rows of one
    record type, in input order.  An exact copy is REC-DUPLICATE (warning); with ``rtype``, a
    row with the key of an earlier row (``x-key``) and other values is REC-DUPLICATE-KEY (error)."""
    seen: dict[tuple, Any] = {}
    keys: dict[tuple, dict[str, Any]] = {}
    out = []
    for row in rows:
        ident = tuple(sorted((k, v) for k, v in row.items() if k != "_where"))
        loc = row.get("_where") or {}
        if ident in seen:
            log.warning("REC-DUPLICATE", f"row repeats row {seen[ident]} exactly; second copy not converted",
                        file=loc.get("file"), record=loc.get("record"))
            log.count_row(loc.get("file"), "rejected")
            continue
        if rtype is not None:
            key = _key_of(rtype, row)
            if key in keys:
                first = keys[key]
                _report_key(log, rtype, row, (first.get("_where") or {}).get("record"), first, loc.get("file"),
                            loc.get("record"))
                log.count_row(loc.get("file"), "rejected")
                continue
            keys[key] = row
        seen[ident] = loc.get("record")
        out.append(row)
    return out


def _read_file(path: Path, rtype: RecordType, log: IssueLog, subject_ids: set[str] | None, *,
               dedupe: bool = True) -> Iterator[dict[str, Any]]:
    fname = str(path)
    fields = set(rtype.fields)
    identifying = bool(rtype.identifying)
    unknown_counts: dict[str, int] = {}
    log.count_row(fname, "read", 0)  # the file is in the accounting even when no row can be read

    def shaped() -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows of the file as {field: value}; rows that cannot be read are rejected here."""
        try:
            encoding = text_encoding(path, log)
        except NotText as exc:
            log.error("REC-NOT-TEXT", f"file is {exc}; none of its records converted", file=fname)
            return
        is_csv = path.suffix == ".csv"
        if is_csv:
            delimiter = csv_delimiter(path, encoding)
            if delimiter != ",":
                log.warning("REC-DELIMITER", f"the header is separated by {'a tab' if delimiter == chr(9) else repr(delimiter)}, "
                            "not by commas; the file is read so — check decimal commas in numbers", file=fname,
                            value="tab" if delimiter == "\t" else delimiter)
            source = _csv_rows(path, encoding, delimiter)
        else:
            source = _iter_json(path, rtype.file, encoding)
        header_seen = rows_seen = False
        for n, raw, header in source:
            if n == -1:  # the CSV header
                header_seen = True
                for name, places in sorted(raw["_repeated"].items()):
                    log.warning("REC-HEADER", f"column {name!r} appears {len(places)} times in the header (columns "
                                f"{', '.join(str(p + 1) for p in places)}); read only where the copies agree",
                                file=fname, field=name)
                continue
            if n == 0:  # the file as a whole
                if raw.code == "REC-EMPTY-FILE":
                    log.warning(raw.code, raw.message, file=fname)
                else:
                    log.error(raw.code, raw.message, file=fname)
                return
            rows_seen = True
            if isinstance(raw, BadRow):
                value = raw.value
                if identifying and raw.code == "REC-RAGGED-ROW":  # cells shifted: any may be a name or phone
                    value = None
                log.count_row(fname, "read")
                log.error(raw.code, raw.message, file=fname, record=n, field=raw.field, value=value)
                log.count_row(fname, "rejected")
                continue
            row = {}
            for k, v in raw.items():
                if k in fields:
                    row[k] = v
                elif _text(v):
                    unknown_counts[k] = unknown_counts.get(k, 0) + 1
            yield n, row
        if is_csv and not header_seen:
            log.warning("REC-EMPTY-FILE", "file is empty (not even a header): no records read", file=fname)
        elif not rows_seen:
            log.info("REC-NO-ROWS", "file holds no records" + (" (a header only)" if is_csv else ""), file=fname)

    try:
        yield from accept_rows(shaped(), rtype, log, fname, subject_ids, dedupe=dedupe)
    except OSError as exc:
        raise TrialbridgeError(f"{fname}: cannot read: {exc}") from exc
    for col, count in sorted(unknown_counts.items()):
        what = f"column {col[1:-1]} has no name" if col.startswith("(column ") else \
            f"column {col!r} is not a field of {rtype.name} records"
        log.warning("REC-UNKNOWN-COLUMN", f"{what}; its {count} non-empty value(s) were not converted", file=fname,
                    field=col, value=count)


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
    seen_keys: dict[tuple, tuple[Any, dict[str, Any]]] = {}
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
            key = _key_of(rtype, row)
            if key in seen_keys:
                _report_key(log, rtype, row, seen_keys[key][0], seen_keys[key][1], fname, ref)
                log.count_row(account, "rejected")
                continue
            seen_rows[ident] = ref
            seen_keys[key] = (ref, row)
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

"""SAS XPORT (transport) version 5 files: our own streaming writer and front-to-back reader.

Writing (:class:`XptWriter`) follows the record layout of SAS technical note TS-140 ("The
record layout of a data set in SAS transport (XPORT) format"): 80-byte records; a library
header, a member header, the dataset descriptor with its label, one 140-byte NAMESTR per
variable, then the observations packed back to back and the last record padded with blanks.
The headers need only the storage width of each Char variable, which comes from the dataset's
:class:`~.stats.ColumnStats` (longest ASCII form, at most 200), so observations are written as
they come, batch by batch, and memory does not depend on the number of rows.  The header
fields that identify the writer (``SAS``/``SASLIB``/``6.06``/``bsd4.2``, NAMESTR justification)
are the ones ReadStat wrote before, so files stay byte-identical to earlier trialbridge output.

Numbers are IBM System/370 double precision (hexadecimal) floating point, big-endian: sign bit,
7-bit excess-64 exponent of 16, 56-bit fraction normalised so its first hex digit is not 0.
Every IEEE double from 16**-65 (about 5.4e-79) up to, not including, 16**63 (about 7.2e75)
converts exactly (a 53-bit significand shifted by at most 3 bits fits the 56-bit fraction), so
integers up to 2**53 and every such value read back unchanged.  Missing is SAS ``.``
(0x2E followed by seven zero bytes); zero (also -0.0) is eight zero bytes.  Values outside the
IBM range cannot be stored: a larger magnitude or an infinity is ``XPT-NUM-RANGE`` (error) and
written as missing; a non-zero magnitude below 16**-65 is ``XPT-NUM-RANGE`` (warning) and
written as 0.  The other formats keep the value.

Issue codes (writing): ``XPT-NONASCII``, ``XPT-LENGTH-200``, ``XPT-LABEL-40``, ``XPT-NAME-8``,
``XPT-NUM-RANGE``; (reading) ``XPT-ENCODING``, ``XPT-NOT-XPORT`` (not SAS transport: random bytes,
a SAS7BDAT renamed; not read), ``XPT-V8`` (version 8: read, with a warning), ``XPT-TRUNCATED``
(a file whose size is not a whole number of 80-byte records, or that ends inside a row: the
rows before the cut are read, the cut row is counted rejected).  See :mod:`converters.formats.sdtm`.

The created/modified stamps are the run's creation time (``SOURCE_DATE_EPOCH`` fixes it:
same datasets, same bytes; see :mod:`trialbridge.converters.core.clock`).

Reading (:func:`iter_xpt`): the metadata (names, labels, types, storage widths) comes from
``pyreadstat.read_xport(metadataonly=True)``; the observations are read front to back,
:data:`READ_CHUNK` rows at a time, decoded as ReadStat decodes them (:func:`ieee_from_ibm`,
trailing blanks dropped, all-blank rows at the end taken as padding), so every reference XPT reads
exactly as through pyreadstat (tests).  ``pyreadstat.read_file_in_chunks`` is not used for the
data because ReadStat re-reads the file from its start for every ``row_offset`` (measured: 0.2 s
for the first 10,000-row chunk of a 1M-row LB, 1.2 s for the last), which makes chunked reading
quadratic; it remains the fallback for a file whose observations cannot be located.  A file that
is not UTF-8 is decoded as cp1252 (then latin1) from the first value where UTF-8 fails
(``XPT-ENCODING``, once per file); the values before it were valid UTF-8.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import pyreadstat

from trialbridge.converters.core.clock import xpt_stamp
from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.converters.formats.sdtm.stats import ColumnStats
from trialbridge.converters.formats.sdtm.values import (
    XPT_MAX_CHAR, XPT_MAX_LABEL, XPT_MAX_NAME, RowBatch, _char, _enrich, _keys_for, _num, to_ascii)

RECORD = 80
READ_CHUNK = 10000
_SAS_VERSION = b"6.06    "
_SAS_OS = b"bsd4.2  "
_MISSING = 0x2E00000000000000  # SAS "." missing value
IBM_LIMIT = 16.0 ** 63  # first magnitude that needs exponent 64: too large
IBM_MIN = 16.0 ** -65  # smallest normalised magnitude
_NAMESTR = struct.Struct(">hhhh8s40s8shhh2s8shhi52s")  # 140 bytes (TS-140)


def _header(kind: bytes, counts: bytes = b"0" * 30) -> bytes:
    return b"HEADER RECORD*******" + kind.ljust(8) + b"HEADER RECORD!!!!!!!" + counts + b"  "


def _text(value: str, width: int) -> bytes:
    return to_ascii(value).encode("ascii")[:width].ljust(width)


def ibm_from_ieee(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IBM 370 doubles (as uint64, missing for NaN) of float64 ``values``, with the masks of the
    values too large (or infinite) and too small (non-zero, under 16**-65) to be stored."""
    x = np.asarray(values, dtype=np.float64)
    missing = np.isnan(x)
    magnitude = np.abs(np.where(missing, 0.0, x))
    too_large = magnitude >= IBM_LIMIT  # includes infinities
    too_small = (magnitude > 0) & (magnitude < IBM_MIN)
    fraction, exp2 = np.frexp(np.where(too_large, 0.0, magnitude))  # magnitude = fraction * 2**exp2
    exp16 = (exp2.astype(np.int64) + 3) >> 2  # ceil(exp2 / 4): magnitude = f * 16**exp16, f in [1/16, 1)
    shift = (exp16 * 4 - exp2).astype(np.uint64)  # 0..3 bits the fraction moves right
    significand = (fraction * 2.0 ** 53).astype(np.uint64)  # exact: 53 bits
    mantissa = significand << (np.uint64(3) - shift)  # 56-bit fraction, first hex digit 1..15
    exponent = (exp16 + 64).astype(np.uint64)
    sign = np.signbit(x).astype(np.uint64)
    out = (sign << np.uint64(63)) | (exponent << np.uint64(56)) | mantissa
    out[(magnitude == 0) | too_small] = 0
    out[missing | too_large] = _MISSING
    return out, too_large, too_small


def xpt_names_ok(meta: Dataset, log: IssueLog, fname: str) -> bool:
    """False (with an XPT-NAME-8 error per name) when a dataset or variable name is too long."""
    too_long = [n for n in [meta.name, *meta.names] if len(n) > XPT_MAX_NAME]
    for n in too_long:
        log.error("XPT-NAME-8", f"{meta.name}: name {n!r} is longer than 8 characters; "
                  f"{fname} not written", file=fname, field=n, value=n)
    return not too_long


class XptWriter:
    """One dataset as XPORT v5 into the binary file ``fh``: headers now, observations with
    :meth:`write_batch`, the final padding with :meth:`finish`.  Names must fit (see
    :func:`xpt_names_ok`); Char widths come from ``stats``."""

    def __init__(self, meta: Dataset, stats: ColumnStats, fh: IO[bytes], log: IssueLog, fname: str, *,
                 created: str | None = None):
        self.meta, self.fh, self.log, self.fname = meta, fh, log, fname
        self.stamp = xpt_stamp(created)
        self.columns: list[tuple[str, str, int]] = []  # (name, type, width)
        for var in meta.variables:
            width = 8 if var.type == "Num" else max(1, min(XPT_MAX_CHAR, stats.var(var.name).max_ascii))
            self.columns.append((var.name, var.type, width))
        offsets, pos = [], 0
        for _, _, width in self.columns:
            offsets.append(pos)
            pos += width
        self.obs_length = pos
        self.dtype = np.dtype({
            "names": [f"c{n}" for n in range(len(self.columns))],
            "formats": [">u8" if typ == "Num" else f"S{width}" for _, typ, width in self.columns],
            "offsets": offsets, "itemsize": pos})
        self.bytes = 0
        fh.write(self._headers(offsets))

    def _label(self, label: str, field: str | None) -> str:
        text = to_ascii(label)
        if len(text) > XPT_MAX_LABEL:
            self.log.warning("XPT-LABEL-40", f"{self.meta.name}: label longer than 40 characters truncated",
                             file=self.fname, field=field, value=text)
            return text[:XPT_MAX_LABEL]
        return text

    def _headers(self, offsets: list[int]) -> bytes:
        meta, stamp = self.meta, self.stamp
        if len(self.columns) > 9999:
            raise ValueError(f"{meta.name}: XPORT v5 holds at most 9999 variables")
        out = [_header(b"LIBRARY"),
               b"SAS     SAS     SASLIB  " + _SAS_VERSION + _SAS_OS + b" " * 24 + stamp,
               stamp.ljust(RECORD),
               _header(b"MEMBER", b"0" * 17 + b"16" + b"0" * 8 + b"140"),
               _header(b"DSCRPTR"),
               b"SAS     " + _text(meta.name, 8) + b"SASDATA " + _SAS_VERSION + _SAS_OS + b" " * 24 + stamp,
               stamp + b" " * 16 + _text(self._label(meta.label, None), 40) + b" " * 8,
               _header(b"NAMESTR", b"000000" + b"%04d" % len(self.columns) + b"0" * 20)]
        namestrs = b"".join(
            _NAMESTR.pack(1 if typ == "Num" else 2, 0, width, n, _text(name, 8),
                          _text(self._label(var.label, var.name), 40), b" " * 8, 0, 0,
                          1 if typ == "Num" else 0, b"\0\0", b" " * 8, 0, 0, offset, b"\0" * 52)
            for n, ((name, typ, width), var, offset) in enumerate(zip(self.columns, meta.variables, offsets), 1))
        namestrs += b" " * (-len(namestrs) % RECORD)
        return b"".join(out) + namestrs + _header(b"OBS")

    def write_batch(self, batch: RowBatch) -> None:
        """Append the rows of ``batch``."""
        if not len(batch) or not self.columns:
            return
        records = np.zeros(len(batch), dtype=self.dtype)
        for n, (name, typ, width) in enumerate(self.columns):
            if typ == "Num":
                records[f"c{n}"] = self._numbers(name, batch)
            else:
                records[f"c{n}"] = self._texts(name, width, batch)
        data = records.tobytes()
        self.fh.write(data)
        self.bytes += len(data)

    def _where(self, batch: RowBatch, i: int, name: str) -> dict[str, Any]:
        return {"file": self.fname, "record": batch.first + i, "field": name,
                "usubjid": batch.rows[i].get("USUBJID") or None}

    def _numbers(self, name: str, batch: RowBatch) -> np.ndarray:
        numbers = np.array(batch.numbers(name), dtype=np.float64)  # None -> NaN -> missing
        ibm, too_large, too_small = ibm_from_ieee(numbers)
        for i in np.flatnonzero(too_large | too_small):
            big = bool(too_large[i])
            self.log.add("error" if big else "warning", "XPT-NUM-RANGE",
                         f"{self.meta.name} row {batch.first + i} {name}: {numbers[i]!r} is outside the range of "
                         f"XPORT (IBM) numbers; written as {'missing' if big else '0'} in the XPT",
                         value=float(numbers[i]), **self._where(batch, int(i), name))
        return ibm

    def _texts(self, name: str, width: int, batch: RowBatch) -> list[bytes]:
        texts = batch.texts(name)
        if all(map(str.isascii, texts)) and max(map(len, texts)) <= width:
            return [t.encode("ascii").ljust(width) for t in texts]
        out = []
        for i, text in enumerate(texts):
            if not text.isascii():
                new = to_ascii(text)
                self.log.warning("XPT-NONASCII", f"{self.meta.name} row {batch.first + i} {name}: non-ASCII value "
                                 f"{text!r} written as {new!r} in the XPT", value=text,
                                 **self._where(batch, i, name))
                text = new
            if len(text) > XPT_MAX_CHAR:
                self.log.error("XPT-LENGTH-200", f"{self.meta.name} row {batch.first + i} {name}: value of "
                               f"{len(text)} bytes exceeds 200; truncated in the XPT", value=text,
                               **self._where(batch, i, name))
                text = text[:XPT_MAX_CHAR]
            if len(text) > width:
                raise ValueError(f"{self.meta.name} row {batch.first + i} {name}: {len(text)} bytes but the "
                                 f"column statistics allow {width}; the statistics do not describe these rows")
            out.append(text.encode("ascii").ljust(width))
        return out

    def finish(self) -> None:
        """Pad the last record with blanks."""
        self.fh.write(b" " * (-self.bytes % RECORD))


# ------------------------------------------------------------------------------------ reading
_ENCODINGS = (None, "cp1252", "latin1")  # None: pyreadstat's default, UTF-8
_FRACTION = np.uint64(0x00FFFFFFFFFFFFFF)
_NOT_SIGN = np.uint64(0x7FFFFFFFFFFFFFFF)
_DROP_BITS = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3], dtype=np.uint64)  # by first hex digit


def ieee_from_ibm(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, missing mask) of IBM 370 doubles given as an (n, width) uint8 array
    (width 2..8; shorter numbers are the leading bytes).  Decoded as ReadStat decodes them, so a
    file reads the same through either path: the 56-bit fraction truncated to IEEE's 53
    significant bits; a non-zero first byte followed by zeros is missing (SAS ``.``, ``.A``-``.Z``,
    ``._``); 7FFF...FF is infinity."""
    n, width = stored.shape
    full = np.zeros((n, 8), dtype=np.uint8)
    full[:, :width] = stored
    bits = full.view(">u8").ravel().astype(np.uint64)
    fraction = bits & _FRACTION
    missing = (full[:, 0] != 0) & (fraction == 0)
    kept = fraction & ~((np.uint64(1) << _DROP_BITS[(fraction >> np.uint64(52)).astype(np.intp)]) - np.uint64(1))
    exponent = ((bits >> np.uint64(56)) & np.uint64(0x7F)).astype(np.int64)
    values = np.ldexp(kept.astype(np.float64), (exponent * 4 - 312).astype(np.int32))  # f * 16**(e-64) / 2**56
    values = np.where(bits >> np.uint64(63) == 1, -values, values)
    infinite = (bits & _NOT_SIGN) == _NOT_SIGN
    values[infinite] = np.where(bits[infinite] >> np.uint64(63) == 1, -np.inf, np.inf)
    return values, missing


def _observations_at(path: Path) -> int | None:
    """Byte offset of the first observation (after the OBS / OBSV8 header record), or None."""
    with open(path, "rb") as fh:
        pos = 0
        while True:
            record = fh.read(RECORD)
            pos += len(record)
            if len(record) < RECORD:
                return None
            if record.startswith(b"HEADER RECORD*******OBS"):
                return pos


class _Decoder:
    """Char bytes to text as ReadStat gives them (trailing blanks dropped, cut at a NUL), in
    the file's encoding: UTF-8 until a value is not, then cp1252, then latin1 (XPT-ENCODING)."""

    def __init__(self, encodings: list[str | None], path: Path, log: IssueLog):
        self.encodings, self.path, self.log = encodings, path, log

    def __call__(self, raw: bytes) -> str:
        raw = raw.rstrip(b" ")
        if b"\0" in raw:
            raw = raw[:raw.index(b"\0")]
        while True:
            try:
                return raw.decode(self.encodings[0] or "utf-8")
            except UnicodeDecodeError:
                if len(self.encodings) == 1:  # pragma: no cover - latin1 decodes every byte
                    raise
                self.encodings.pop(0)
                self.log.info("XPT-ENCODING", f"{self.path.name} is not UTF-8; decoded as {self.encodings[0]}",
                              file=self.path.name, value=self.encodings[0])


def _read_sequentially(path: Path, start: int, columns: list[tuple[str, bool, int]], decode: _Decoder,
                       chunksize: int) -> Iterator[dict[str, Any]]:
    """Rows of fixed-length observations from byte ``start``: (name, is_num, width) each.  As in
    ReadStat, rows that are all blanks count only when a later row is not (the last record's
    padding is blanks), and a partial row at the end is padding."""
    length = sum(width for _, _, width in columns)
    blank_rows = 0
    blank_row: dict[str, Any] | None = None
    n_rows = 0  # rows of the chunks before this one
    with open(path, "rb") as fh:
        fh.seek(start)
        while True:
            data = fh.read(length * chunksize)
            n = len(data) // length
            if not n:
                return
            block = np.frombuffer(data, dtype=np.uint8, count=n * length).reshape(n, length)
            values, offset = [], 0
            for _, is_num, width in columns:
                part = block[:, offset:offset + width]
                if is_num:
                    numbers, missing = ieee_from_ibm(part)
                    values.append([None if m else x for x, m in zip(numbers.tolist(), missing.tolist())])
                else:
                    raw = np.ascontiguousarray(part).tobytes()
                    values.append([decode(raw[i:i + width]) for i in range(0, n * width, width)])
                offset += width
            names = [name for name, _, _ in columns]
            blank = (block == 0x20).all(axis=1).tolist()
            for i, row in enumerate(zip(*values)):
                if blank[i]:
                    blank_rows += 1
                    blank_row = dict(zip(names, row))
                    continue
                while blank_rows:
                    yield dict(blank_row)
                    blank_rows -= 1
                yield dict(zip(names, row))
            if len(data) < length * chunksize:
                tail = data[n * length:]
                if tail.strip(b" "):
                    decode.log.error("XPT-TRUNCATED", f"{decode.path.name}: the file ends inside row {n_rows + n + 1} "
                                     f"({len(tail)} of its {length} bytes); that row is not read - the file was cut "
                                     "short (copy it again from its source)", file=decode.path.name,
                                     record=n_rows + n + 1, value=len(tail))
                    decode.log.count_row(str(decode.path), "read")
                    decode.log.count_row(str(decode.path), "rejected")
                return
            n_rows += n


def _next_encoding(encodings: list[str], path: Path, log: IssueLog) -> None:
    """Drop the encoding that failed and say which one is tried next (XPT-ENCODING)."""
    if len(encodings) == 1:  # pragma: no cover - latin1 decodes every byte
        raise UnicodeDecodeError("latin1", b"", 0, 1, f"{path.name}: no encoding left to try")
    encodings.pop(0)
    log.info("XPT-ENCODING", f"{path.name} is not UTF-8; decoded as {encodings[0]}", file=path.name,
             value=encodings[0])


def iter_xpt(path: Path, log: IssueLog, chunksize: int = READ_CHUNK) -> tuple[Dataset, Iterator[dict[str, Any]]]:
    """The dataset's metadata (rows empty, from pyreadstat) and an iterator over its rows, read
    front to back :data:`READ_CHUNK` rows at a time.  (pyreadstat's chunked reading re-scans the
    file from its start for every chunk, which is quadratic: it is used only for a file whose
    observations this reader cannot locate.)"""
    kind = _xport_kind(path)
    if kind != "XPORT":
        raise NotXport(kind)
    encodings = list(_ENCODINGS)
    while True:
        try:
            _, meta = pyreadstat.read_xport(str(path), metadataonly=True, encoding=encodings[0])
            break
        except UnicodeDecodeError:
            _next_encoding(encodings, path, log)
    name = (meta.table_name or path.stem).upper()
    labels = dict(zip(meta.column_names, meta.column_labels or [None] * len(meta.column_names)))
    variables = []
    for col in meta.column_names:
        typ = "Num" if meta.readstat_variable_types.get(col) == "double" else "Char"
        variables.append(_enrich(col, labels.get(col) or "", typ, name))
    label = meta.file_label or load_spec(name).label
    ds = Dataset(name=name, label=label, label_given=bool(meta.file_label), variables=variables, rows=[],
                 keys=_keys_for(name, meta.column_names), source=str(path))
    columns = [(v.name, v.type == "Num", int(meta.variable_storage_width.get(v.name) or 0)) for v in variables]
    if _is_v8(path):
        log.warning("XPT-V8", f"{path.name} is SAS transport version 8 (names up to 32 characters, values over "
                    "200 bytes); FDA submissions take version 5: it is read, and the XPT rules say what does "
                    "not fit version 5", file=path.name, value="V8")
    size = path.stat().st_size
    if size % RECORD:
        log.error("XPT-TRUNCATED", f"{path.name}: {size} bytes is not a whole number of 80-byte records, as every "
                  "XPORT writer pads its file: the file was cut short or damaged (copy it again from its "
                  "source); the rows up to the cut are read", file=path.name, value=size)
    start = _observations_at(path)
    if start is not None and columns and all(w > 0 for _, _, w in columns) and \
            all(2 <= w <= 8 for _, num, w in columns if num):
        return ds, _counted(_read_sequentially(path, start, columns, _Decoder(encodings, path, log), chunksize),
                            path, log)
    converters = [(v.name, _num if v.type == "Num" else _char) for v in variables]

    def rows() -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            try:
                for df, _ in pyreadstat.read_file_in_chunks(
                        pyreadstat.read_xport, str(path), chunksize=chunksize, offset=offset,
                        encoding=encodings[0], disable_datetime_conversion=True):
                    for rec in df.itertuples(index=False, name=None):
                        yield {n: conv(x) for (n, conv), x in zip(converters, rec)}
                    offset += len(df)
                return
            except UnicodeDecodeError:
                _next_encoding(encodings, path, log)

    return ds, _counted(rows(), path, log)


def _counted(rows: Iterator[dict[str, Any]], path: Path, log: IssueLog) -> Iterator[dict[str, Any]]:
    """The rows, counted read under the file (once, when the iteration ends)."""
    n = 0
    try:
        for row in rows:
            n += 1
            yield row
    finally:
        log.count_row(str(path), "read", n)


_LIBRARY = b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!"
_LIBRARY_V8 = b"HEADER RECORD*******LIBV8   HEADER RECORD!!!!!!!"
_SAS7BDAT = bytes.fromhex("000000000000000000000000c2ea8160b31411cfbd92080009c7318c181f1011")


class NotXport(ValueError):
    """The file is not SAS transport at all; the message says what it is."""


def _xport_kind(path: Path) -> str:
    """XPORT, or what else the file's first bytes show it to be."""
    with open(path, "rb") as fh:
        head = fh.read(RECORD)
    if head.startswith(_LIBRARY) or head.startswith(_LIBRARY_V8):
        return "XPORT"
    if head[:32] == _SAS7BDAT:
        return "a SAS7BDAT dataset (SAS's native format), not SAS transport: export it as XPORT version 5"
    if not head:
        return "empty (0 bytes)"
    return "not a SAS transport (XPORT) file: it does not begin with the XPORT library header"


def _is_v8(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(_LIBRARY_V8)) == _LIBRARY_V8

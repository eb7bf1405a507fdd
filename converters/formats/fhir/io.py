"""FHIR wire format: read and write resources as R4 JSON (Bundle or Bulk Data NDJSON).

* :func:`write_ndjson` — one ``<ResourceType>.ndjson`` per type (atomic).
* :func:`write_bundle` — one Bundle, ``collection`` or ``transaction`` (entries with
  ``request: PUT <Type>/<id>``, so loading twice is idempotent).
* :func:`read_fhir` / :func:`read_fhir_located` — resources from a Bundle ``.json``, a
  ``.ndjson`` file or a folder of them; numbers are parsed losslessly by the hub's codec
  (:mod:`trialbridge.converters.core.jsoncodec`): floats where a float reproduces the text,
  ``Decimal`` where it would not, so ``1.30`` stays ``1.30`` (design rule 5a).  Numbers made by
  the mapping modules are ``Decimal``; :func:`dumps` writes them with their exact text.

Which resources a subject's records become, and back, is mapping logic:
:mod:`trialbridge.mappings.fhir.assemble`.  R4 <-> R5 lives beside this module
(:mod:`.versions`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.files import atomic_open, output_file
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError



# --------------------------------------------------------------------------- serialisation
# The hub's one JSON codec (converters/core/jsoncodec.py): numbers keep their exact text.


def dumps(resource: Any) -> str:
    """Compact JSON text; Decimal numbers written exactly as their text (see :mod:`jsoncodec`)."""
    return jsoncodec.dumps(resource).decode("utf-8")


def loads(data: str | bytes) -> Any:
    """One JSON document, numbers lossless (fast path orjson, exact path Decimal)."""
    return jsoncodec.loads(data)


# --------------------------------------------------------------------------- writers


def write_ndjson(resources: Iterable[dict], folder: Path) -> list[Path]:
    """One ``<ResourceType>.ndjson`` per resource type in ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    managers: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    try:
        for res in resources:
            rtype = res["resourceType"]
            if rtype not in handles:
                paths[rtype] = output_file(folder, f"{rtype}.ndjson")  # a type name checked before it is a path
                managers[rtype] = atomic_open(paths[rtype], "wb")
                handles[rtype] = managers[rtype].__enter__()
            handles[rtype].write(jsoncodec.dumps(res) + b"\n")
    except BaseException as exc:
        for m in managers.values():
            m.__exit__(type(exc), exc, exc.__traceback__)
        raise
    for m in managers.values():
        m.__exit__(None, None, None)
    return [paths[t] for t in sorted(handles)]


def write_bundle(resources: Iterable[dict], path: Path, bundle_type: str = "collection") -> Path:
    """One Bundle (``collection`` or ``transaction``) written to ``path``."""
    if bundle_type not in ("collection", "transaction"):
        raise TrialbridgeError(f"bundle type must be collection or transaction, not {bundle_type!r}")
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fh.write(b'{"resourceType":"Bundle","type":' + jsoncodec.dumps(bundle_type) + b',"entry":[')
        for n, res in enumerate(resources):
            entry: dict = {"fullUrl": f"urn:uuid:{res['id']}" if _is_uuid(res["id"]) else
                           f"{res['resourceType']}/{res['id']}", "resource": res}
            if bundle_type == "transaction":
                entry["request"] = {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
            fh.write((b"," if n else b"") + b"\n" + jsoncodec.dumps(entry))
        fh.write(b"\n]}\n")
    return path


def _is_uuid(text: str) -> bool:
    import uuid

    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


# --------------------------------------------------------------------------- readers
#
# Inputs as they come: a Bundle of any type (collection, transaction, batch, searchset with
# _include entries and paging links, history, document, message, *-response), a single
# resource, an NDJSON file, or a folder of them (a Bulk Data export: several NDJSON files per
# type, and its $export manifest when present).  Every entry read is counted under its file
# ("read"); entries that are not resources are counted rejected (not JSON, nothing in them)
# or out of scope (an entry that only asks the server something: DELETE, GET …).


@dataclass(frozen=True)
class FhirEntry:
    """One resource of the input: its file, its place there (NDJSON line or Bundle entry,
    1-based), its JSON bytes and the Bundle entry's fullUrl (references may use it)."""

    file: str
    record: int
    raw: bytes
    full_url: str | None = None
    resource: dict | None = field(default=None, compare=False, repr=False)  # parsed, for a Bundle entry


def read_fhir(path: Path, log: IssueLog) -> Iterator[dict]:
    """Resources from a Bundle (.json), an .ndjson file or a folder of .ndjson/.json files."""
    for _file, resource in read_fhir_located(path, log):
        yield resource


def read_fhir_located(path: Path, log: IssueLog) -> Iterator[tuple[str, dict]]:
    """``(file, resource)`` from a Bundle (.json), an .ndjson file or a folder of them; NDJSON
    lines that are not JSON objects are reported (FHIR-JSON) and skipped."""
    for entry in read_fhir_entries(path, log):
        if entry.resource is not None:  # a Bundle entry: parsed with its whole file
            yield entry.file, entry.resource
            continue
        try:
            yield entry.file, jsoncodec.loads_object(entry.raw)
        except jsoncodec.JsonNotObjectError as exc:
            log.error("FHIR-JSON", f"line is not a resource: {exc}", file=entry.file, record=entry.record)
            log.count_row(entry.file, "rejected")
        except jsoncodec.JsonError as exc:
            log.error("FHIR-JSON", f"line is not JSON: {exc}", file=entry.file, record=entry.record)
            log.count_row(entry.file, "rejected")


def read_fhir_raw(path: Path, log: IssueLog) -> Iterator[tuple[str, int, bytes]]:
    """``(file, record number, JSON bytes of one resource)`` (see :func:`read_fhir_entries`)."""
    for entry in read_fhir_entries(path, log):
        yield entry.file, entry.record, entry.raw


def read_fhir_entries(path: Path, log: IssueLog) -> Iterator[FhirEntry]:
    """Every resource of the input as :class:`FhirEntry`, without parsing NDJSON lines: the
    caller decides how much of each it needs (the engine only its type, id and Patient;
    workers parse it exactly).  Bundle entries are serialised back by the codec (numbers keep
    their text)."""
    path = Path(path)
    if path.is_dir():
        for p in _export_files(path, log):
            yield from read_fhir_entries(p, log)
        return
    if is_ndjson(path):
        yield from _ndjson_entries(path, log)
        return
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise TrialbridgeError(f"{path}: cannot read: {exc}") from exc
    if text.startswith(_BOM):
        text = text[len(_BOM):]
    try:
        data = jsoncodec.loads(text)
    except jsoncodec.JsonDepthError as exc:
        raise TrialbridgeError(f"{path}: not read: {exc} (no FHIR resource nests that deep); nothing converted") \
            from exc
    except (UnicodeDecodeError, ValueError) as exc:
        ended = "unexpected end" in str(exc) or "EOF" in str(exc)
        why = "the file ends in the middle of the JSON (cut off in transfer?)" if ended else "not valid JSON"
        raise TrialbridgeError(f"{path}: {why}: {exc}; one Bundle is one JSON document, so nothing of it is "
                               "converted") from exc
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        yield from _bundle_entries(data, str(path), log, counter=[0])
    elif isinstance(data, dict) and data.get("resourceType"):
        log.count_row(str(path), "read")
        yield FhirEntry(str(path), 1, jsoncodec.dumps(data), None, data)
    elif isinstance(data, list):
        raise TrialbridgeError(f"{path}: a JSON array of {len(data)} item(s) at top level is not FHIR: give a Bundle "
                               "(resourceType Bundle, its resources in entry[].resource) or NDJSON (one resource "
                               "per line)")
    else:
        raise TrialbridgeError(f"{path}: neither a FHIR Bundle nor a resource (a JSON object needs a resourceType)")


# Bounds on what one NDJSON file may make us hold or unpack.  A line is one resource: beyond
# MAX_LINE_BYTES it is skipped unread (a Binary with a large attachment is the only real
# resource near that size).  A gzip member that unpacks to more than GZIP_MAX_RATIO times its
# compressed size (after the first GZIP_RATIO_FROM bytes: small files compress well) or to
# more than GZIP_MAX_BYTES is a decompression bomb, not an export: reading stops there.
# Real Bulk Data NDJSON compresses 5 to 20 times.  Environment variables override each (tests).
MAX_LINE_BYTES = 64 * 2**20
GZIP_MAX_RATIO = 200
GZIP_RATIO_FROM = 16 * 2**20
GZIP_MAX_BYTES = 64 * 2**30
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
_BOM = b"\xef\xbb\xbf"
_BLOCK = 1 << 16  # bytes read (unpacked) at a time: small enough to stay in the CPU cache


def _limit(name: str, default: int) -> int:
    import os

    text = os.environ.get(f"TRIALBRIDGE_FHIR_{name}")
    try:
        return int(text) if text else default
    except ValueError:
        raise TrialbridgeError(f"TRIALBRIDGE_FHIR_{name}={text!r}: not a number") from None


def is_ndjson(path: Path) -> bool:
    """An NDJSON file, plain or gzip-compressed as Bulk Data servers send it."""
    return path.name.lower().endswith(NDJSON_SUFFIXES)


def ndjson_head(path: Path, size: int = 4096) -> bytes:
    """The first bytes of an NDJSON file (unpacked when it is gzip); b"" when unreadable."""
    import zlib

    head = b""
    try:
        with open(path, "rb") as fh:
            if not path.name.lower().endswith(".gz"):
                return fh.read(size)
            try:
                for out in _gunzip_blocks(fh, size):  # what a cut file holds before the cut counts
                    head += out
                    if len(head) >= size:
                        break
            except (_GzipCut, zlib.error):
                pass
            return head[:size]
    except OSError:
        return b""


def _ndjson_entries(path: Path, log: IssueLog) -> Iterator[FhirEntry]:
    """The lines of an NDJSON file (``.ndjson``, or ``.ndjson.gz`` unpacked as it is read):
    a UTF-8 BOM, CRLF line ends and blank lines are taken as they come; a line longer than
    MAX_LINE_BYTES is rejected unread (FHIR-LINE-TOO-LONG); a gzip file that is damaged
    (FHIR-GZIP) or unpacks beyond the bounds (FHIR-GZIP-BOMB) is read up to there, named.
    Read in blocks, so memory holds one block and at most one line, and the bounds are
    checked once per block whatever the lines look like."""
    import zlib

    file = str(path)
    max_line = _limit("MAX_LINE_BYTES", MAX_LINE_BYTES)
    compressed = path.name.lower().endswith(".gz")
    max_ratio, ratio_from = _limit("GZIP_MAX_RATIO", GZIP_MAX_RATIO), _limit("GZIP_RATIO_FROM", GZIP_RATIO_FROM)
    max_bytes = _limit("GZIP_MAX_BYTES", GZIP_MAX_BYTES)
    block = min(_BLOCK, max(max_line, 1))
    unpacked, n = 0, 0
    pending: list[bytes] = []  # the start of a line whose end is in a later block
    pending_len = 0
    skipping = False  # inside a line already longer than max_line: its bytes are dropped
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise TrialbridgeError(f"{path}: cannot read: {exc}") from exc

    def line_entry(line: bytes) -> Iterator[FhirEntry]:
        if n == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        line = line.strip()
        if line:
            log.count_row(file, "read")
            yield FhirEntry(file, n, line)

    def too_long() -> None:
        log.count_row(file, "read")
        log.error("FHIR-LINE-TOO-LONG", f"line is longer than {max_line} bytes; not read (one resource per line: "
                  "is this NDJSON?)", file=file, record=n, value=max_line)
        log.count_row(file, "rejected")

    with raw:
        blocks = _gunzip_blocks(raw, block) if compressed else iter(lambda: raw.read(block), b"")
        try:
            for chunk in blocks:
                unpacked += len(chunk)
                lines = chunk.split(b"\n")
                for k, part in enumerate(lines[:-1]):
                    n += 1
                    if k and (not part or part.isspace()):  # blank lines: nothing to read (fast)
                        continue
                    if skipping or (k == 0 and pending_len + len(part) > max_line):
                        skipping, pending, pending_len = False, [], 0
                        too_long()
                        continue
                    if k == 0 and pending:
                        line = b"".join(pending) + part
                        pending, pending_len = [], 0
                    else:
                        line = part
                    if len(line) > max_line:
                        too_long()
                        continue
                    yield from line_entry(line)
                if not skipping and lines[-1]:
                    pending.append(lines[-1])  # parts, joined once the line ends (no quadratic copying)
                    pending_len += len(lines[-1])
                    if pending_len > max_line:
                        skipping, pending, pending_len = True, [], 0
                # the block in hand is read; no further block of a bomb is unpacked
                if compressed and _bomb(unpacked, raw.tell(), max_ratio, ratio_from, max_bytes):
                    log.error("FHIR-GZIP-BOMB", f"the file unpacks to more than {_ratio_text(unpacked, raw.tell())}"
                              f" (bounds: {max_ratio} times its compressed size past {ratio_from} bytes, "
                              f"{max_bytes} bytes in all): a decompression bomb, not an export; read up to line "
                              f"{n}, the rest is not read", file=file, record=n + 1, value=unpacked)
                    return
        except (_GzipCut, zlib.error) as exc:
            log.error("FHIR-GZIP", f"the gzip file is damaged or cut off after line {n}: {exc}; the rest is not read",
                      file=file, record=n + 1, value=str(exc)[:80])
            return
        except OSError as exc:
            raise TrialbridgeError(f"{path}: cannot read: {exc}") from exc
        if skipping:
            n += 1
            too_long()
        elif pending:
            n += 1
            yield from line_entry(b"".join(pending))


class _GzipCut(Exception):
    """A gzip stream that ends before its end marker (a download cut off)."""


def _gunzip_blocks(raw, block: int) -> Iterator[bytes]:
    """The unpacked bytes of a gzip file (any number of members), at most ``block`` at a time:
    what a damaged or cut stream held before the damage comes out before the error."""
    import zlib

    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False
    while True:
        data = inflate.unconsumed_tail or raw.read(64 * 1024)
        if not data:
            if started and not inflate.eof:
                raise _GzipCut("the compressed stream ends before its end marker")
            return
        started = True
        out = inflate.decompress(data, block)
        if out:
            yield out
        if inflate.eof:
            rest = inflate.unused_data
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            started = False
            if rest.strip(b"\0"):
                started = True
                out = inflate.decompress(rest, block)
                if out:
                    yield out


def _bomb(unpacked: int, packed: int, max_ratio: int, ratio_from: int, max_bytes: int) -> bool:
    return unpacked > max_bytes or (unpacked > ratio_from and unpacked > max_ratio * max(packed, 1))


def _ratio_text(unpacked: int, packed: int) -> str:
    return f"{unpacked} bytes from {packed} compressed"


def _bundle_entries(bundle: dict, file: str, log: IssueLog, counter: list[int]) -> Iterator[FhirEntry]:
    """The resources of a Bundle of any type, entries numbered across nested Bundles."""
    btype = bundle.get("type")
    matches = 0
    for entry in _as_list(bundle.get("entry")):
        counter[0] += 1
        n = counter[0]
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            # a Bundle inside a Bundle (a document or message kept in a collection): its entries
            log.info("FHIR-BUNDLE-NESTED", f"entry is a {resource.get('type')} Bundle; its entries are read",
                     file=file, record=n, value=resource.get("type"))
            yield from _bundle_entries(resource, file, log, counter)
            continue
        log.count_row(file, "read")
        if isinstance(resource, dict):
            if (_as_dict(entry.get("search")).get("mode") or "match") == "match":
                matches += 1
            yield FhirEntry(file, n, jsoncodec.dumps(resource), entry.get("fullUrl"), resource)
        elif isinstance(entry, dict) and (entry.get("request") or entry.get("response")):
            action = _as_dict(entry.get("request"))
            what = f"{action.get('method', '')} {action.get('url', '')}".strip() or \
                f"response {_as_dict(entry.get('response')).get('status', '')}".strip()
            log.info("FHIR-BUNDLE-NO-RESOURCE", f"{btype} Bundle entry without a resource ({what}): nothing to "
                     "convert", file=file, record=n, value=what)
            log.count_row(file, "out_of_scope")
        else:
            log.error("FHIR-JSON", "Bundle entry has no resource", file=file, record=n)
            log.count_row(file, "rejected")
    if btype == "searchset":
        following = next((link.get("url") for link in _as_list(bundle.get("link"))
                          if isinstance(link, dict) and link.get("relation") == "next"), None)
        total = bundle.get("total")
        if following or (isinstance(total, int) and total > matches):
            log.warning("FHIR-SEARCHSET-INCOMPLETE", "searchset Bundle is one page of a search"
                        + (f" ({matches} of {total} matches)" if isinstance(total, int) else "")
                        + (f"; the next page ({following}) is not in the input" if following else "")
                        + ": resources on other pages are not converted", file=file, field="link",
                        value=following or total)


def _as_dict(value) -> dict:
    """A Bundle element that should be an object, or {} when the sender put something else."""
    return value if isinstance(value, dict) else {}


def _as_list(value) -> list:
    """A Bundle element that should be an array (an object alone is read as one item)."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []


def _export_files(folder: Path, log: IssueLog) -> list[Path]:
    """The files of a folder input: those its Bulk Data ``$export`` manifest lists (output and
    error files, by the name at the end of each url) when the folder has one, else every
    .ndjson/.json file but our own ``issues.json``."""
    files = _fhir_files(folder)
    manifests = [p for p in files if p.suffix == ".json" and _is_manifest(p)]
    if not manifests:
        for p in sorted(folder.iterdir()):  # what is there and not read is said, never skipped unseen
            if p.is_file() and p not in files and not p.name.startswith(".") and p.name != "issues.json":
                data_like = any(part in p.name.lower() for part in (".json", ".ndjson")) or \
                    p.suffix.lower() in (".gz", ".zip", ".bz2", ".xz", ".zst", ".tar", ".tgz")
                log.add("warning" if data_like else "info", "FHIR-FILE-NOT-READ", "file in the FHIR input folder is "
                        "not .json, .ndjson or .ndjson.gz" + (" (unpack a .json.gz, .zip or .bz2 first)" if data_like
                                                            else "") + "; not read", file=str(p))
        return files
    if len(manifests) > 1:
        raise TrialbridgeError(f"{folder}: several Bulk Data manifests ({', '.join(p.name for p in manifests)}); "
                               "give one export per folder")
    manifest = manifests[0]
    try:
        data = jsoncodec.loads(manifest.read_bytes())
    except (OSError, ValueError) as exc:
        raise TrialbridgeError(f"{manifest}: cannot read the Bulk Data manifest: {exc}") from exc
    listed: list[Path] = []
    for kind in ("output", "error"):
        for item in data.get(kind) or []:
            url = str((item or {}).get("url") or "")
            name = url.rstrip("/").rsplit("/", 1)[-1]
            local = folder / name
            if not name or not local.is_file():
                log.error("FHIR-EXPORT-FILE-MISSING", f"the manifest lists {kind} file {url!r} (type "
                          f"{(item or {}).get('type')}), which is not in the folder: its resources are missing",
                          file=str(manifest), field=kind, value=url)
                continue
            if local not in listed:
                listed.append(local)
            count = (item or {}).get("count")
            if kind == "output" and isinstance(count, int):
                lines = _count_lines(local)
                if lines != count:
                    log.warning("FHIR-EXPORT-COUNT", f"the manifest says {count} {item.get('type')} resource(s) in "
                                f"{name}; the file has {lines}", file=str(local), field="count", value=count)
    for p in files:
        if p != manifest and p not in listed:
            log.warning("FHIR-EXPORT-UNLISTED", "file is in the export folder but not in its manifest; not read",
                        file=str(p))
    log.info("FHIR-EXPORT-MANIFEST", f"Bulk Data export: {len(listed)} file(s) read as its manifest lists them",
             file=str(manifest), value=data.get("transactionTime"))
    return listed


def _is_manifest(path: Path) -> bool:
    """A Bulk Data $export manifest: a JSON object with an ``output`` list and no resourceType."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if b'"resourceType"' in head[:200] or b'"output"' not in head and b'"transactionTime"' not in head:
        return False
    try:
        data = jsoncodec.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "resourceType" not in data and isinstance(data.get("output"), list)


def _count_lines(path: Path) -> int:
    """Resources (non-blank lines) in an NDJSON file; a gzip file is counted by reading it
    the way it is read for conversion (bounded; its findings are given then, not here)."""
    if path.name.lower().endswith(".gz"):
        return sum(1 for _ in _ndjson_entries(path, IssueLog()))
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _fhir_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if (p.suffix == ".json" or is_ndjson(p)) and not p.name.startswith(".")
                   and p.name != "issues.json")  # our own findings file beside the output
    if not files:
        raise TrialbridgeError(f"{folder}: no .ndjson, .ndjson.gz or .json files")
    return files

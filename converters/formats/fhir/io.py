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
    if path.suffix == ".ndjson":
        try:
            with open(path, "rb") as fh:
                for n, line in enumerate(fh, start=1):
                    line = line.strip()
                    if line:
                        log.count_row(str(path), "read")
                        yield FhirEntry(str(path), n, line)
        except OSError as exc:
            raise TrialbridgeError(f"{path}: cannot read: {exc}") from exc
        return
    try:
        data = jsoncodec.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrialbridgeError(f"{path}: cannot read: {exc}") from exc
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        yield from _bundle_entries(data, str(path), log, counter=[0])
    elif isinstance(data, dict) and data.get("resourceType"):
        log.count_row(str(path), "read")
        yield FhirEntry(str(path), 1, jsoncodec.dumps(data), None, data)
    else:
        raise TrialbridgeError(f"{path}: neither a FHIR Bundle nor a resource")


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
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _fhir_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".ndjson", ".json") and not p.name.startswith(".")
                   and p.name != "issues.json")  # our own findings file beside the output
    if not files:
        raise TrialbridgeError(f"{folder}: no .ndjson or .json files")
    return files

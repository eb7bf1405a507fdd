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

from pathlib import Path
from typing import Any, Iterable, Iterator

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.files import atomic_open
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
    try:
        for res in resources:
            rtype = res["resourceType"]
            if rtype not in handles:
                managers[rtype] = atomic_open(folder / f"{rtype}.ndjson", "wb")
                handles[rtype] = managers[rtype].__enter__()
            handles[rtype].write(jsoncodec.dumps(res) + b"\n")
    except BaseException as exc:
        for m in managers.values():
            m.__exit__(type(exc), exc, exc.__traceback__)
        raise
    for m in managers.values():
        m.__exit__(None, None, None)
    return [folder / f"{t}.ndjson" for t in sorted(handles)]


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


def read_fhir(path: Path, log: IssueLog) -> Iterator[dict]:
    """Resources from a Bundle (.json), an .ndjson file or a folder of .ndjson/.json files."""
    for _file, resource in read_fhir_located(path, log):
        yield resource


def read_fhir_raw(path: Path, log: IssueLog) -> Iterator[tuple[str, int, bytes]]:
    """``(file, record number, JSON bytes of one resource)`` from a Bundle (.json), an .ndjson
    file or a folder of them, without parsing NDJSON lines: the caller decides how much of each
    it needs to read (the engine only its type, id and Patient; workers parse it exactly).
    Bundle entries are serialised back by the codec (numbers keep their text)."""
    path = Path(path)
    if path.is_dir():
        for p in _fhir_files(path):
            yield from read_fhir_raw(p, log)
        return
    if path.suffix == ".ndjson":
        try:
            with open(path, "rb") as fh:
                for n, line in enumerate(fh, start=1):
                    line = line.strip()
                    if line:
                        yield str(path), n, line
        except OSError as exc:
            raise TrialbridgeError(f"{path}: cannot read: {exc}") from exc
        return
    for file, resource in read_fhir_located(path, log):
        yield file, 0, jsoncodec.dumps(resource)


def _fhir_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".ndjson", ".json") and not p.name.startswith(".")
                   and p.name != "issues.json")  # our own findings file beside the output
    if not files:
        raise TrialbridgeError(f"{folder}: no .ndjson or .json files")
    return files


def read_fhir_located(path: Path, log: IssueLog) -> Iterator[tuple[str, dict]]:
    """``(file, resource)`` from a Bundle (.json), an .ndjson file or a folder of them."""
    path = Path(path)
    if path.is_dir():
        for p in _fhir_files(path):
            yield from read_fhir_located(p, log)
        return
    try:
        if path.suffix == ".ndjson":
            with open(path, "rb") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    log.count_row(str(path), "read")
                    try:
                        obj = jsoncodec.loads_object(line)
                    except jsoncodec.JsonNotObjectError as exc:
                        log.error("FHIR-JSON", f"line is not a resource: {exc}", file=str(path), record=n)
                        log.count_row(str(path), "rejected")
                        continue
                    except jsoncodec.JsonError as exc:
                        log.error("FHIR-JSON", f"line is not JSON: {exc}", file=str(path), record=n)
                        log.count_row(str(path), "rejected")
                        continue
                    yield str(path), obj
            return
        data = jsoncodec.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrialbridgeError(f"{path}: cannot read: {exc}") from exc
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        for n, entry in enumerate(data.get("entry") or [], start=1):
            log.count_row(str(path), "read")
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield str(path), entry["resource"]
            else:
                log.error("FHIR-JSON", "Bundle entry has no resource", file=str(path), record=n)
                log.count_row(str(path), "rejected")
    elif isinstance(data, dict) and data.get("resourceType"):
        log.count_row(str(path), "read")
        yield str(path), data
    else:
        raise TrialbridgeError(f"{path}: neither a FHIR Bundle nor a resource")

"""FHIR wire format: read and write resources as R4 JSON (Bundle or Bulk Data NDJSON).

* :func:`write_ndjson` — one ``<ResourceType>.ndjson`` per type (atomic).
* :func:`write_bundle` — one Bundle, ``collection`` or ``transaction`` (entries with
  ``request: PUT <Type>/<id>``, so loading twice is idempotent).
* :func:`read_fhir` / :func:`read_fhir_located` — resources from a Bundle ``.json``, a
  ``.ndjson`` file or a folder of them; numbers are parsed as ``decimal.Decimal`` so ``1.30``
  stays ``1.30`` (design rule 5a).  :func:`dumps` writes them back with their exact text.

Which resources a subject's records become, and back, is mapping logic:
:mod:`trialbridge.mappings.fhir.assemble`.  R4 <-> R5 lives beside this module
(:mod:`.versions`).
"""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator

from trialbridge.converters.core.files import atomic_open
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError



# --------------------------------------------------------------------------- serialisation


def _encode(obj: Any, out: list[str]) -> None:
    if isinstance(obj, dict):
        out.append("{")
        first = True
        for k, v in obj.items():
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(k, ensure_ascii=False))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for n, v in enumerate(obj):
            if n:
                out.append(",")
            _encode(v, out)
        out.append("]")
    elif isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError(f"not a JSON number: {obj}")
        out.append(str(obj))
    elif isinstance(obj, float):
        raise TypeError("floats are not written: FHIR numbers are Decimal to keep their exact text")
    else:
        out.append(json.dumps(obj, ensure_ascii=False))


def dumps(resource: Any) -> str:
    """Compact JSON with Decimal numbers written exactly as their text."""
    out: list[str] = []
    _encode(resource, out)
    return "".join(out)


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


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
                managers[rtype] = atomic_open(folder / f"{rtype}.ndjson")
                handles[rtype] = managers[rtype].__enter__()
            handles[rtype].write(dumps(res) + "\n")
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
    with atomic_open(path) as fh:
        fh.write('{"resourceType":"Bundle","type":' + json.dumps(bundle_type) + ',"entry":[')
        for n, res in enumerate(resources):
            entry: dict = {"fullUrl": f"urn:uuid:{res['id']}" if _is_uuid(res["id"]) else
                           f"{res['resourceType']}/{res['id']}", "resource": res}
            if bundle_type == "transaction":
                entry["request"] = {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
            fh.write(("," if n else "") + "\n" + dumps(entry))
        fh.write("\n]}\n")
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


def read_fhir_located(path: Path, log: IssueLog) -> Iterator[tuple[str, dict]]:
    """``(file, resource)`` from a Bundle (.json), an .ndjson file or a folder of them."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".ndjson", ".json") and not p.name.startswith(".")
                       and p.name != "issues.json")  # our own findings file beside the output
        if not files:
            raise TrialbridgeError(f"{path}: no .ndjson or .json files")
        for p in files:
            yield from read_fhir_located(p, log)
        return
    try:
        if path.suffix == ".ndjson":
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    log.count_row(str(path), "read")
                    try:
                        obj = loads(line)
                    except ValueError as exc:
                        log.error("FHIR-JSON", f"line is not JSON: {exc}", file=str(path), record=n)
                        log.count_row(str(path), "rejected")
                        continue
                    yield str(path), obj
            return
        data = loads(path.read_text("utf-8"))
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

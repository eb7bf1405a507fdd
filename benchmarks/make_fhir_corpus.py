"""Scale the hospital FHIR sample up to a target number of Observations, streaming.

    python benchmarks/make_fhir_corpus.py --observations 50000 -o /tmp/corpus

The sample (``samples/nct04387942-fhir/ndjson``: 24 subjects, 1,617 Observations and their
Patients, ResearchSubjects, Encounters, MedicationAdministrations, AdverseEvents, plus the
sponsor and site ResearchStudy) is written ``ceil(N / 1617)`` times; the last copy keeps
only the first Observations it needs, so Observation.ndjson has exactly N lines.  Every
other resource of the last copy is written whole, so every reference still resolves.

Each copy is a distinct set of subjects for the converter:

* every resource id (Patient, ResearchSubject, Encounter, MedicationAdministration,
  Observation, AdverseEvent) becomes uuid5(our namespace, "<seed>|<copy>|<old id>"), and every
  reference to it (``Patient/<id>``, ``Encounter/<id>``) is rewritten the same way;
* the trial subject number (identifier system ``SUBJECT_ID_SYSTEM`` of mappings.fhir, the one
  ``mappings.fhir.patient`` / ``research_subject`` read) becomes ``<copy:05d>-<old>``; the
  USUBJID identifier (``USUBJID_SYSTEM``) ends with it likewise, and the
  hospital's medical record number (identifier of type MR) gets ``-<copy:05d>`` appended;
* the two ResearchStudy resources (sponsor study and site) are written once, not copied:
  every copy's ResearchSubjects point at the same site study.

Nothing else changes: dates, values and their exact decimal text (``130.00`` stays
``130.00``) are copied as bytes.  The rewrite works on the text of each sample line: each
line is parsed once to find the ids and identifiers, and turned into a template of literal
pieces and slots; a copy is the templates joined with that copy's ids.  So memory holds the
sample, never the corpus, and 5M Observations take a few minutes and ~8 GB of disk.

Deterministic: no clock and no randomness; ``--seed`` (default 1) is part of every new id,
so two seeds give corpora with disjoint ids and the same seed gives the same bytes.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import uuid
from pathlib import Path

from trialbridge.mappings.fhir import SUBJECT_ID_SYSTEM, USUBJID_SYSTEM

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "nct04387942-fhir" / "ndjson"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:trialbridge:benchmark:fhir-corpus")
DEFAULT_SEED = 1
SHARED_TYPES = ("ResearchStudy",)  # written once, never copied
SCALED_TYPE = "Observation"  # the type whose count is the target
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
REFERENCE = re.compile(r'"reference":"([A-Za-z]+)/([^"]+)"')


def _json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _is_mrn(ident: dict) -> bool:
    return any(c.get("code") == "MR" for c in (ident.get("type") or {}).get("coding", []) or [])


class Template:
    """One sample line as literal pieces and slots.  A slot is a key of the per-copy table
    of replacements: ("id", old id), ("subject", old subject number), ("usubjid", old
    USUBJID), ("mrn", old MRN)."""

    __slots__ = ("parts",)

    def __init__(self, line: str, copied_ids: set[str]):
        obj = json.loads(line)
        slots: list[tuple[int, int, tuple[str, str]]] = []  # (start, end, key)
        for ident in obj.get("identifier", []) if isinstance(obj.get("identifier"), list) else []:
            system, value = ident.get("system"), ident.get("value")
            if system == SUBJECT_ID_SYSTEM:
                kind = "subject"
            elif system == USUBJID_SYSTEM:
                kind = "usubjid"
            elif _is_mrn(ident):
                kind = "mrn"
            else:
                continue
            # the identifier as written (compact JSON, keys in the order given) must be in the line once
            ident_text = _json_text(ident)
            value_text = '"value":' + _json_text(value)
            if line.count(ident_text) != 1 or ident_text.count(value_text) != 1:
                raise SystemExit(f"sample line of {obj.get('resourceType')}/{obj.get('id')} is not compact JSON "
                                 f"as this generator expects (identifier {ident_text})")
            start = line.index(ident_text) + ident_text.index(value_text) + len('"value":')
            slots.append((start, start + len(_json_text(value)), (kind, value)))
        for m in UUID.finditer(line):
            if m.group(0) in copied_ids:
                slots.append((m.start(), m.end(), ("id", m.group(0))))
        slots.sort()
        parts: list = []
        at = 0
        for start, end, key in slots:
            if start < at:
                raise SystemExit(f"overlapping rewrite in {obj.get('resourceType')}/{obj.get('id')}")
            parts.append(line[at:start])
            parts.append(key)
            at = end
        parts.append(line[at:])
        self.parts = tuple(p for p in parts if p != "")

    def render(self, table: dict) -> str:
        return "".join([p if p.__class__ is str else table[p] for p in self.parts])


def load_sample(sample: Path = SAMPLE) -> tuple[list[str], dict[str, list[str]]]:
    """(resource types in file order, raw lines per type), after checking that every
    reference in the sample names a resource in it (so every copy's references do too)."""
    lines: dict[str, list[str]] = {}
    for path in sorted(sample.glob("*.ndjson")):
        lines[path.stem] = [ln.rstrip("\n") for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    if SCALED_TYPE not in lines or not lines[SCALED_TYPE]:
        raise SystemExit(f"{sample}: no {SCALED_TYPE}.ndjson")
    known = {f"{t}/{json.loads(ln)['id']}" for t, rows in lines.items() for ln in rows}
    for rows in lines.values():
        for ln in rows:
            for m in REFERENCE.finditer(ln):
                if f"{m.group(1)}/{m.group(2)}" not in known:
                    raise SystemExit(f"{sample}: reference {m.group(1)}/{m.group(2)} names no resource of the sample")
    return sorted(lines), lines


def copy_table(copy: int, seed: int, ids: list[str], subjects: list[str], usubjids: dict[str, str],
               mrns: list[str]) -> dict:
    """Replacement text (JSON, quotes included for identifier values) of every slot for one copy."""
    table: dict = {("id", old): str(uuid.uuid5(NAMESPACE, f"{seed}|{copy}|{old}")) for old in ids}
    for old in subjects:
        table[("subject", old)] = _json_text(new_subject_id(copy, old))
    for old, subject in usubjids.items():
        table[("usubjid", old)] = _json_text(old[: len(old) - len(subject)] + new_subject_id(copy, subject))
    for old in mrns:
        table[("mrn", old)] = _json_text(f"{old}-{copy:05d}")
    return table


def new_subject_id(copy: int, old: str) -> str:
    return f"{copy:05d}-{old}"


def copies_for(observations: int, per_copy: int) -> int:
    return math.ceil(observations / per_copy)


def make_corpus(observations: int, folder: Path, seed: int = DEFAULT_SEED, sample: Path = SAMPLE,
                progress: bool = True) -> dict[str, int]:
    """Write the scaled corpus into ``folder`` (``<ResourceType>.ndjson``); returns the lines
    written per resource type."""
    if observations < 1:
        raise SystemExit("--observations must be at least 1")
    types, lines = load_sample(sample)
    copied_ids = {json.loads(ln)["id"] for t in types if t not in SHARED_TYPES for ln in lines[t]}
    templates = {t: [Template(ln, copied_ids) for ln in lines[t]] for t in types if t not in SHARED_TYPES}
    keys = {p for ts in templates.values() for tpl in ts for p in tpl.parts if p.__class__ is tuple}
    ids = sorted(old for kind, old in keys if kind == "id")
    subjects = sorted(old for kind, old in keys if kind == "subject")
    mrns = sorted(old for kind, old in keys if kind == "mrn")
    usubjids = {}
    for kind, old in keys:
        if kind == "usubjid":
            subject = next((s for s in subjects if old.endswith("-" + s)), None)
            if subject is None:
                raise SystemExit(f"USUBJID {old!r} does not end with a subject number of the sample")
            usubjids[old] = subject
    per_copy = len(lines[SCALED_TYPE])
    copies = copies_for(observations, per_copy)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {t: 0 for t in types}
    handles = {t: open(folder / f"{t}.ndjson", "w", encoding="utf-8", buffering=1 << 20) for t in types}
    started = time.perf_counter()
    step = max(1, copies // 20)
    try:
        for t in SHARED_TYPES:
            for ln in lines.get(t, []):
                handles[t].write(ln + "\n")
                counts[t] += 1
        for copy in range(copies):
            table = copy_table(copy, seed, ids, subjects, usubjids, mrns)
            for t, ts in templates.items():
                if t == SCALED_TYPE:
                    ts = ts[: observations - copy * per_copy]
                if ts:
                    handles[t].write("\n".join([tpl.render(table) for tpl in ts]) + "\n")
                    counts[t] += len(ts)
            if progress and (copy + 1) % step == 0:
                done = counts[SCALED_TYPE]
                print(f"  corpus: {done:,}/{observations:,} Observations, {time.perf_counter() - started:.1f} s",
                      file=sys.stderr, flush=True)
    finally:
        for fh in handles.values():
            fh.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--observations", "-n", type=int, default=50_000, help="Observations to write (default 50000)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="folder for <ResourceType>.ndjson")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"part of every new id (default {DEFAULT_SEED})")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    counts = make_corpus(args.observations, args.output, seed=args.seed)
    total = sum(counts.values())
    for t, n in counts.items():
        print(f"{t}.ndjson\t{n}")
    print(f"{total} resources written to {args.output} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Records <-> SDTM datasets, through the mapping modules in ``mappings/sdtm``.

Every module there with a ``DOMAIN`` is a subject-level domain: ``to_sdtm(ctx)`` gives
its rows, ``seq_key(row)`` orders them for --SEQ, an optional ``supplemental(ctx,
rows)`` adds SUPPQUAL rows, and an optional ``from_sdtm(datasets, study)`` maps back.
Modules are found by scanning the package, so a new domain is a new module — no
registry to edit.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict
from types import ModuleType
from typing import Any

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import Records
from trialbridge.converters.core.sdtm_spec import load_spec, make_dataset
from trialbridge.mappings import derive
import trialbridge.mappings.sdtm as sdtm_pkg
from trialbridge.mappings.sdtm import trial_design
from trialbridge.mappings.sdtm.context import Context
from trialbridge.mappings.study import Study


def domain_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(sdtm_pkg.__path__):
        mod = importlib.import_module(f"{sdtm_pkg.__name__}.{info.name}")
        if hasattr(mod, "DOMAIN") and hasattr(mod, "to_sdtm"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.DOMAIN))


def records_to_sdtm(records: Records, study: Study, log: IssueLog) -> dict[str, Dataset]:
    ctx = Context(records, study, log)
    out: dict[str, Dataset] = {}
    for mod in domain_modules():
        rows = mod.to_sdtm(ctx)
        seq_var = f"{mod.DOMAIN}SEQ"
        spec = load_spec(mod.DOMAIN)
        if hasattr(mod, "seq_key") and seq_var in spec.names:
            derive.assign_seq(rows, seq_var, mod.seq_key)
        else:  # no --SEQ (SV, SE keys): sort by the natural keys so input order never shows
            rows.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in spec.keys))
        if hasattr(mod, "supplemental"):
            mod.supplemental(ctx, rows)
        if rows or mod.DOMAIN == "DM":
            out[mod.DOMAIN] = make_dataset(mod.DOMAIN, [_fill(spec, r) for r in rows])
    for name, build in trial_design.BUILDERS.items():
        rows = build(study)
        spec = load_spec(name)
        rows.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in spec.keys))
        if rows:
            out[name] = make_dataset(name, [_fill(spec, r) for r in rows])
    for name, rows in _supp_rows(ctx).items():
        out[name] = make_dataset(name, rows)
    return dict(sorted(out.items()))


def _fill(spec, row: dict[str, Any]) -> dict[str, Any]:
    """Every spec variable the row uses, missing values normalised ('' / None)."""
    out = {}
    for v in spec.variables:
        if v.name in row:
            value = row[v.name]
            out[v.name] = (value if value not in ("",) else None) if v.type == "Num" else ("" if value is None else value)
    unknown = set(row) - set(out)
    if unknown:
        raise ValueError(f"mapping for {spec.name} produced variables not in its spec: {sorted(unknown)}")
    return out


def _sortable(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def _supp_rows(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in ctx.supp:
        grouped[f"SUPP{s.rdomain}"].append({
            "STUDYID": ctx.studyid, "RDOMAIN": s.rdomain, "USUBJID": s.usubjid, "IDVAR": s.idvar,
            "IDVARVAL": s.idvarval, "QNAM": s.qnam, "QLABEL": s.qlabel, "QVAL": s.qval, "QORIG": s.qorig,
            "QEVAL": s.qeval,
        })
    for rows in grouped.values():
        rows.sort(key=lambda r: (r["USUBJID"], r["IDVAR"], _idvarval_key(r["IDVARVAL"]), r["QNAM"]))
    return dict(grouped)


def _idvarval_key(v: str) -> tuple:
    n = derive.to_number(v)
    return (0, n, "") if n is not None else (1, 0, v)


def sdtm_to_records(datasets: dict[str, Dataset], study: Study | None, log: IssueLog) -> Records:
    records = Records()
    dm = datasets.get("DM")
    if dm is not None and dm.rows:
        records.study_id = str(dm.rows[0].get("STUDYID") or "")
    from trialbridge.mappings.sdtm import vs  # height/weight return to the subject record
    extra = vs.subject_fields(datasets)
    targets = {"DM": "subject", "EX": "exposure", "LB": "lab_result", "CP": "cell_phenotype",
               "AE": "adverse_event", "SV": "visit", "DS": "disposition"}
    tracked = {name: Dataset(ds.name, ds.label, ds.variables, [_Tracked(r) for r in ds.rows], ds.keys, ds.source)
               for name, ds in datasets.items()}
    datasets = tracked
    for mod in domain_modules():
        if not hasattr(mod, "from_sdtm") or mod.DOMAIN not in targets:
            continue
        rows = mod.from_sdtm(datasets, study)
        if mod.DOMAIN == "DM":
            for r in rows:
                r.update(extra.get(r.get("subject_id", ""), {}))
        records.rows[targets[mod.DOMAIN]] = rows
    known = set(targets) | {"VS"} | {f"SUPP{d}" for d in ("DM", "EX", "AE")}
    design = {"SE", "TA", "TE", "TV", "TI", "TS"}  # rebuilt from the study configuration
    for name, ds in sorted(datasets.items()):
        if name in design:
            continue
        if name not in known:
            log.warning("SDTM-NOT-MAPPED", f"dataset {name} has no mapping to records; its {len(ds.rows)} row(s) "
                        "were not converted", file=ds.source or name)
            continue
        _report_unread(ds, log)
    return records


class _Tracked(dict):
    """A row that remembers which variables a mapping read, so nothing is dropped unseen."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def _report_unread(ds: Dataset, log: IssueLog) -> None:
    """Every variable (or SUPP QNAM) with values that no mapping read is reported with its count."""
    if ds.name.startswith("SUPP"):
        unread: dict[str, int] = {}
        consumed = _SUPP_CONSUMED.get(ds.name, set())
        for r in ds.rows:
            if r.get("QNAM") not in consumed and r.get("QVAL") not in (None, ""):
                unread[r["QNAM"]] = unread.get(r["QNAM"], 0) + 1
        for qnam, n in sorted(unread.items()):
            log.info("SDTM-VAR-NOT-MAPPED", f"{ds.name} QNAM {qnam}: {n} value(s) have no record field and were "
                     "not carried to records", file=ds.source or ds.name, field=qnam, value=n)
        return
    read: set[str] = set()
    counts: dict[str, int] = {}
    for r in ds.rows:
        read |= r.read
        for k, v in r.items():
            if v not in (None, ""):
                counts[k] = counts.get(k, 0) + 1
    for var in ds.names:
        if var not in read and counts.get(var) and var not in ("STUDYID", "DOMAIN"):
            log.info("SDTM-VAR-NOT-MAPPED", f"{ds.name}.{var}: {counts[var]} value(s) not carried to records "
                     "(derived again on conversion to SDTM, or no record field)", file=ds.source or ds.name,
                     field=var, value=counts[var])


_SUPP_CONSUMED = {"SUPPDM": {"RELAPSDT"}, "SUPPEX": {"BSA", "DOSEBSA"}, "SUPPAE": {"AETRTEM"}}

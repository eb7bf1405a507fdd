"""Rules that look across subjects or datasets, through compact indexes only.

What they keep: the DM subject set and RFSTDTC (one entry per subject, built by the
context while DM streams), the SE elements of each subject, the STUDYID values seen,
the AETERM -> AEDECOD codings with their counts, the TA arms, one last-contact date per
subject without RFPENDTC.  Rows that can be judged only once a later dataset has gone by
(AE rows of those subjects, DM arms before TA, SUPP-- references before their parent) wait
in bounded stores (:mod:`.stores`).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.converters.validation.engine import (CACHE_LIMIT, TRIAL_DESIGN, Check, DatasetInfo, RowFn, dtc,
                                                      is_null, key_text, num_text)
from trialbridge.converters.validation.stores import Deferred

INSERT_BATCH = 5_000


class SubjectsInDm(Check):
    """SDTM-USUBJID-NOT-IN-DM: every USUBJID outside DM and trial design is in DM (skipped without DM)."""

    needs = frozenset({"dm"})

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        subjects = self.ctx.dm_subjects
        if subjects is None or ds.name == "DM" or ds.name in TRIAL_DESIGN or "USUBJID" not in ds.present:
            return None

        def row_fn(row_no: int, row: dict) -> None:
            u = row.get("USUBJID")
            if u in subjects or is_null(u):
                return
            self.report(ds, f"Subject {u} is not present in DM", row_no, row, "USUBJID", u)
        return row_fn


class StudyDays(Check):
    """SDTM-DY-INCONSISTENT: --DY/--STDY/--ENDY against --DTC/--STDTC/--ENDTC and DM.RFSTDTC.

    DM's own DMDY waits for the end of DM (RFSTDTC of the subject's last DM row, as before)."""

    needs = frozenset({"dm"})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._dm_rows: Deferred | None = None

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        p = ds.prefix
        pairs = [
            (f"{p}{d}", f"{p}{y}") for d, y in (("DTC", "DY"), ("STDTC", "STDY"), ("ENDTC", "ENDY"))
            if f"{p}{d}" in ds.present and f"{p}{y}" in ds.present
        ]
        if not pairs or "USUBJID" not in ds.present:
            return None
        if ds.name == "DM":
            deferred = self._dm_rows = Deferred("dm-study-days")

            def dm_row(row_no: int, row: dict) -> None:
                deferred.add((row_no, row.get("USUBJID"), {n: row.get(n) for pair in pairs for n in pair},
                              ds.where(row)))
            return dm_row
        if not self.ctx.rfstdtc:
            return None
        check = self._checker(ds, pairs)
        return lambda row_no, row: check(row_no, row, ds.where)

    def _checker(self, ds: DatasetInfo, pairs: list[tuple[str, str]]):
        rfst, date_part, study_day = self.ctx.rfstdtc, self.ctx.date_part, iso8601.study_day

        def check(row_no: int, row: dict, where) -> None:
            ref = rfst.get(row.get("USUBJID"))
            if ref is None:
                return
            for dtc_name, dy in pairs:
                recorded = row.get(dy)
                on = date_part(row.get(dtc_name))
                if on is None or is_null(recorded):
                    continue
                expected = study_day(on, ref)
                if not isinstance(recorded, (int, float)) or recorded != expected:
                    # P21's levels: SD1086 (--DY) a warning, SD1090 (--STDY) and SD1094 (--ENDY) errors
                    level = "error" if dy.endswith(("STDY", "ENDY")) else "warning"
                    self.add(ds.file, f"{dy} is {num_text(recorded)} but {dtc_name} {row.get(dtc_name)} and "
                             f"RFSTDTC give {expected}", row_no, dy, recorded, *where(row), severity=level)
        return check

    def end(self, ds: DatasetInfo) -> None:
        if ds.name != "DM" or self._dm_rows is None:
            return
        deferred, self._dm_rows = self._dm_rows, None
        if self.ctx.rfstdtc:
            p = ds.prefix
            pairs = [(f"{p}{d}", f"{p}{y}") for d, y in (("DTC", "DY"), ("STDTC", "STDY"), ("ENDTC", "ENDY"))
                     if f"{p}{d}" in ds.present and f"{p}{y}" in ds.present]
            check = self._checker(ds, pairs)
            for row_no, u, values, where in deferred:
                check(row_no, {"USUBJID": u, **values}, lambda _row, w=where: w)
        deferred.close()

    def close(self) -> None:
        if self._dm_rows is not None:
            self._dm_rows.close()


def _boundary(a: iso8601.DateTime, b: iso8601.DateTime) -> int | None:
    """:func:`iso8601.compare`, except that two equal dates without a time are undecided: an
    element that ends on 2014-07-02 and the next that starts that day share the date, so an
    event dated that day may belong to either."""
    order = iso8601.compare(a, b)
    return None if order == 0 and not a.has_time else order


class EpochInSe(Check):
    """SDTM-EPOCH-SE: EPOCH is the EPOCH of the subject's SE element holding --STDTC/--DTC."""

    needs = frozenset({"se"})

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        elements = self.ctx.se_elements
        if elements is None or ds.name in ("SE", "DM") or ds.name in TRIAL_DESIGN \
                or not {"EPOCH", "USUBJID"} <= ds.present:
            return None
        p = ds.prefix
        date_vars = [v for v in (f"{p}STDTC", f"{p}DTC") if v in ds.present]
        if not date_vars:
            return None
        parse = self.ctx.parse
        memo: dict[Any, Any] = {}  # (USUBJID, date) -> (candidate epochs, first certain epoch)

        def row_fn(row_no: int, row: dict) -> None:
            epoch, u = row.get("EPOCH"), row.get("USUBJID")
            subject = elements.get(u)
            if is_null(epoch) or not subject:
                return
            var_name = next((v for v in date_vars if not is_null(row.get(v))), None)
            on = dtc(row.get(var_name)) if var_name else None
            found = memo.get((u, on))
            if found is None:
                if len(memo) > CACHE_LIMIT:
                    memo.clear()
                found = memo[(u, on)] = _element_epochs(parse(on), subject)
            candidates, certain = found
            if certain is not None and epoch not in candidates:
                self.report(ds, f"EPOCH {epoch!r} but {var_name} {row[var_name]} falls in the SE element "
                            f"of EPOCH {certain!r}", row_no, row, "EPOCH", epoch)
        return row_fn


def _element_epochs(on: iso8601.DateTime | None, subject: list[tuple[Any, Any, Any]]) -> tuple[frozenset, Any]:
    """The EPOCHs of the elements ``on`` may fall in, and the first it certainly falls in."""
    if on is None or on.date is None:
        return frozenset(), None  # partial date: the element cannot be told
    candidates, certain = set(), []
    for n, (start, end, element_epoch) in enumerate(subject):
        last = n == len(subject) - 1
        after_start = _boundary(on, start)
        before_end = 1 if end is None else _boundary(end, on)
        if after_start == -1 or before_end == -1 or (before_end == 0 and not last):
            continue  # an element runs from its start up to, not including, its end
        candidates.add(element_epoch)
        if after_start in (0, 1) and (before_end == 1 or (before_end == 0 and last)):
            certain.append(element_epoch)
    return frozenset(candidates), (certain[0] if certain else None)


class StudyIds(Check):
    """SDTM-STUDYID-MULTIPLE: one STUDYID across the datasets; reported at the end, on the
    first record of each other value in each dataset (index: the distinct values seen)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._seen: list[tuple[DatasetInfo, dict[Any, list]]] = []

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        seen: dict[Any, list] = {}  # STUDYID -> [count, first row, usubjid, seq]
        self._seen.append((ds, seen))
        if "STUDYID" not in ds.present:
            return None

        def row_fn(row_no: int, row: dict) -> None:
            s = row.get("STUDYID")
            if not isinstance(s, str) and not is_null(s):
                s = num_text(s)  # a number in a third-party file: compared (and sorted) as text
            entry = seen.get(s)
            if entry is not None:
                entry[0] += 1
            elif not is_null(s):
                seen[s] = [1, row_no, *ds.where(row)]
        return row_fn

    def finish(self) -> None:
        counts: dict[Any, int] = {}
        for _ds, seen in self._seen:
            for s, entry in seen.items():
                counts[s] = counts.get(s, 0) + entry[0]
        if len(counts) <= 1:
            return
        dm_ids = next((set(seen) for ds, seen in self._seen if ds.name == "DM"), set())
        main = next(iter(dm_ids)) if len(dm_ids) == 1 else max(sorted(counts), key=lambda s: counts[s])
        for ds, seen in self._seen:
            for s, (_n, row_no, usubjid, seq) in sorted(seen.items(), key=lambda item: item[1][1]):
                if s != main:
                    self.add(ds.file, f"STUDYID {s!r} differs from the study's {main!r} (first of its records here)",
                             row_no, "STUDYID", s, usubjid, seq)


class SuppParents(Check):
    """SDTM-SUPP-PARENT: each SUPP-- record has its parent record (RDOMAIN, USUBJID, IDVAR, IDVARVAL).

    SUPP-- references wait in the scratch database; a parent streaming after them stores the
    (USUBJID, IDVAR value) pairs of the IDVARs they name, and every dataset stores its
    subject set (one entry per subject run) for references without IDVAR.  ``finish`` joins
    the two.  DM's subjects come from the DM index.  A parent that streamed before the
    SUPP-- referring to it by IDVAR has not stored those values: such references are counted
    in one ``SDTM-SUPP-PARENT-UNCHECKED`` info issue per SUPP--, parent and IDVAR.
    """

    needs = frozenset({"dm"})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._supps: list[tuple[DatasetInfo, int]] = []  # (SUPP--, its number in the refs table)
        self._wanted: dict[str, set[str]] = {}  # possible parent name -> IDVARs referred to so far
        self._indexed: dict[str, set[str]] = {}  # parent name -> IDVARs stored while it streamed
        self._refs: list[tuple] = []
        self._keys: list[tuple] = []
        self._tables = False

    def _tables_ready(self) -> Any:
        db = self.ctx.scratch.db
        if not self._tables:
            db.execute("CREATE TABLE supp_refs (supp, row_no, usubjid, rdomain, idvar, idvarval, idnull, ikey, vkey,"
                       " wu, wseq)")
            db.execute("CREATE TABLE parent_keys (ds, ikey, ukey, vkey)")
            self._tables = True
        return db

    def _flush(self) -> None:
        if not (self._refs or self._keys):
            return
        db = self._tables_ready()
        if self._refs:
            db.executemany("INSERT INTO supp_refs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self._refs)
            self._refs.clear()  # in place: the row functions hold these lists
        if self._keys:
            db.executemany("INSERT INTO parent_keys VALUES (?, ?, ?, ?)", self._keys)
            self._keys.clear()

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        parent_fn, supp_fn = self._parent_rows(ds), self._supp_rows(ds)
        if parent_fn is None or supp_fn is None:
            return parent_fn or supp_fn

        def both(row_no: int, row: dict) -> None:
            parent_fn(row_no, row)
            supp_fn(row_no, row)
        return both

    def _supp_rows(self, ds: DatasetInfo) -> RowFn | None:
        if not ds.name.startswith("SUPP"):
            return None
        number = len(self._supps)
        self._supps.append((ds, number))
        refs, wanted, seen_pairs = self._refs, self._wanted, set()
        split = ds.name[4:] if len(ds.name) == 8 else None  # SUPPLBUR may refer to LBUR by RDOMAIN LB

        def row_fn(row_no: int, row: dict) -> None:
            rdomain = row.get("RDOMAIN")
            if is_null(rdomain):
                return  # SDTM-REQ-MISSING reports it
            idvar, idvarval = row.get("IDVAR"), row.get("IDVARVAL")
            idnull = is_null(idvar)
            pair = (rdomain, idvar)
            if not idnull and pair not in seen_pairs and isinstance(idvar, str):
                seen_pairs.add(pair)
                if isinstance(rdomain, str):
                    wanted.setdefault(rdomain, set()).add(idvar)
                if split is not None and split[:2] == str(rdomain).upper():
                    wanted.setdefault(split, set()).add(idvar)
            usubjid, seq = ds.where(row)
            refs.append((number, row_no, row.get("USUBJID"), rdomain, idvar, idvarval, idnull,
                               "" if idnull else idvar, "" if idnull else key_text(idvarval), usubjid, seq))
            if len(refs) >= INSERT_BATCH:
                self._flush()
        return row_fn

    def _parent_rows(self, ds: DatasetInfo) -> RowFn | None:
        if ds.name == "DM":
            return None  # the DM index has DM's subjects
        name = ds.name
        idvars = sorted(v for v in self._wanted.get(name, ()) if v in ds.present)
        self._indexed[name] = set(idvars)
        keys = self._keys
        last = [object()]

        def row_fn(row_no: int, row: dict) -> None:
            u = row.get("USUBJID")
            if u is not last[0] and u != last[0]:
                last[0] = u
                keys.append((name, "", u, ""))  # the subject set, for references without IDVAR
            for idvar in idvars:
                value = row.get(idvar)
                if not is_null(value):
                    keys.append((name, idvar, u, key_text(value)))
            if len(keys) >= INSERT_BATCH:
                self._flush()
        return row_fn

    def end(self, ds: DatasetInfo) -> None:
        self._flush()

    def finish(self) -> None:
        self._flush()
        if not self._supps:
            return
        db = self._tables_ready()
        db.execute("CREATE INDEX parent_keys_lookup ON parent_keys (ds, ikey, vkey, ukey)")
        db.execute("CREATE INDEX supp_refs_supp ON supp_refs (supp, rdomain)")
        db.execute("CREATE TABLE supp_parents (supp, rdomain, parent)")
        fed = self.ctx.fed
        subjects = self.ctx.dm_subjects or set()
        for ds, number in self._supps:
            rdomains = [r for (r,) in db.execute("SELECT DISTINCT rdomain FROM supp_refs WHERE supp = ?", (number,))]
            db.executemany("INSERT INTO supp_parents VALUES (?, ?, ?)",
                           [(number, r, self._parent_of(ds.name, r)) for r in rdomains])
        # one pass over the references, each joined with its parent's stored keys
        rows = db.execute(
            "SELECT r.supp, r.row_no, r.usubjid, r.rdomain, r.idvar, r.idvarval, r.idnull, r.wu, r.wseq, p.parent, "
            "EXISTS (SELECT 1 FROM parent_keys k WHERE k.ds = p.parent AND k.ikey = r.ikey AND k.vkey = r.vkey "
            "AND k.ukey IS r.usubjid) "
            "FROM supp_refs r JOIN supp_parents p ON p.supp = r.supp AND p.rdomain = r.rdomain ORDER BY r.rowid")
        unchecked: Counter = Counter()
        for number, row_no, usubjid, rdomain, idvar, idvarval, idnull, wu, wseq, parent, exists in rows:
            ds = self._supps[number][0]
            if parent is None:
                self.add(ds.file, f"Parent dataset {rdomain} is not among the datasets", row_no, "RDOMAIN",
                         rdomain, wu, wseq)
            elif idnull:
                if not (usubjid in subjects if rdomain == "DM" else exists):
                    self.add(ds.file, f"No {rdomain} record for subject {usubjid}", row_no, "USUBJID", usubjid,
                             wu, wseq)
            elif idvar not in fed[parent].present:
                self.add(ds.file, f"IDVAR {idvar} is not a variable of {rdomain}", row_no, "IDVAR", idvar, wu, wseq)
            elif idvar not in self._indexed.get(parent, ()):
                unchecked[(number, parent, idvar)] += 1
            elif not exists:
                self.add(ds.file, f"No {rdomain} record with {idvar} = {idvarval} for subject {usubjid}",
                         row_no, "IDVARVAL", idvarval, wu, wseq)
        for (number, parent, idvar), n in sorted(unchecked.items()):
            ds = self._supps[number][0]
            self.ctx.log.info(
                "SDTM-SUPP-PARENT-UNCHECKED",
                f"{n} record(s) of {ds.name} refer to {parent} by {idvar}: {parent} was fed before {ds.name}, "
                f"so their IDVARVAL was not checked (feed SUPP-- datasets before their parents)",
                file=ds.file, field="IDVARVAL", value=idvar)

    def _parent_of(self, supp: str, rdomain: Any) -> str | None:
        fed = self.ctx.fed
        if isinstance(rdomain, str) and rdomain in fed:
            return rdomain
        if len(supp) == 8 and supp[4:6] == str(rdomain).upper() and supp[4:] in fed:
            return supp[4:]  # split dataset: SUPPLBUR -> LBUR
        return None


# DM dates that count as contact with the subject when RFPENDTC is empty.
DM_CONTACT_DATES = ("RFICDTC", "RFSTDTC", "RFENDTC", "RFXSTDTC", "RFXENDTC", "DTHDTC")


def _later(candidate: tuple[str, str] | None, best: tuple[str, str] | None, parse: Any) -> tuple[str, str] | None:
    """``iso8601.latest([candidate, best])`` on (date, 'DATASET.VARIABLE') pairs, with the
    context's cached ``parse``: the later of the two, the one held already when equal (or
    undecided and not before by :func:`iso8601.sort_key`); values without a known year count
    for nothing."""
    dt = parse(candidate[0]) if candidate is not None else None
    if dt is None or dt.known == 0:
        return best if best is not None and _dated(best, parse) else None
    if best is None:
        return candidate
    best_dt = parse(best[0])
    if best_dt is None or best_dt.known == 0:
        return candidate
    order = iso8601.compare(best_dt, dt)
    if order is None:
        order = -1 if iso8601.sort_key(best_dt.text) < iso8601.sort_key(dt.text) else 1
    return best if order >= 0 else candidate


def _dated(entry: tuple[str, str], parse: Any) -> bool:
    dt = parse(entry[0])
    return dt is not None and dt.known > 0


class AeAfterLastContact(Check):
    """SDTM-AE-AFTER-LAST-CONTACT: AESTDTC not after DM.RFPENDTC, or, when that is empty, the
    subject's last contact: the latest date over DM's reference dates and every
    --DTC/--STDTC/--ENDTC of the subject-level datasets except AE.

    Index: RFPENDTC per subject from DM; for the subjects without it, the latest date of
    each dataset, combined at the end in dataset-name order (of equal dates the dataset
    first by name is named, whatever the feeding order).  AE rows of subjects with RFPENDTC
    are judged as they stream; the others wait (bounded) until every dataset has gone by.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._dm = False
        self._reference: dict[Any, tuple[str, str]] = {}
        self._lacking: set[Any] = set()
        self._latest: dict[Any, list[tuple[str, tuple[str, str]]]] = {}  # subject -> [(dataset, latest)]
        self._current: dict[Any, tuple[str, str]] = {}  # subject -> latest in the dataset streaming
        self._waiting: Deferred | None = None

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        if ds.name == "DM":
            return self._dm_rows(ds)
        if not self._dm:
            return None
        name = ds.name
        if ds.prefix == "AE":
            if "AESTDTC" in ds.present and not name.startswith("SUPP"):
                return self._ae_rows(ds)
            return None
        if name in TRIAL_DESIGN or name.startswith("SUPP") or name == "RELREC" or "USUBJID" not in ds.present:
            return None
        p = ds.prefix
        cols = [c for c in (f"{p}DTC", f"{p}STDTC", f"{p}ENDTC") if c in ds.present]
        if not cols or not self._lacking:
            return None
        return self._contact_rows(ds, cols, self._lacking)

    def _contact_rows(self, ds: DatasetInfo, cols: list[str], subjects: Any) -> RowFn:
        current, parse = self._current, self.ctx.parse
        wheres = [f"{ds.name}.{c}" for c in cols]

        def row_fn(row_no: int, row: dict) -> None:
            u = row.get("USUBJID")
            if u not in subjects:
                return
            for col, where in zip(cols, wheres):
                text = dtc(row.get(col))
                if parse(text) is not None:
                    current[u] = _later((text, where), current.get(u), parse)
        return row_fn

    def _dm_rows(self, ds: DatasetInfo) -> RowFn:
        self._dm = True
        reference, lacking = self._reference, self._lacking
        cols = [c for c in DM_CONTACT_DATES if c in ds.present]
        contact = self._contact_rows(ds, cols, _Everyone()) if cols else None

        def row_fn(row_no: int, row: dict) -> None:
            u = row.get("USUBJID")
            if is_null(u):
                return
            end = dtc(row.get("RFPENDTC"))
            if iso8601.parse(end) is not None:
                reference[u] = (end, "DM.RFPENDTC")
            else:
                lacking.add(u)
            if contact is not None:
                contact(row_no, row)
        return row_fn

    def _ae_rows(self, ds: DatasetInfo) -> RowFn:
        reference, lacking = self._reference, self._lacking
        if self._waiting is None:
            self._waiting = Deferred("ae-after-last-contact")
        waiting = self._waiting

        def row_fn(row_no: int, row: dict) -> None:
            u = row.get("USUBJID")
            if u in lacking:  # its last contact is known only at the end
                waiting.add((ds.file, row_no, u, row.get("AESTDTC"), ds.where(row)))
                return
            ref = reference.get(u)
            if ref is not None:
                self._judge(ds.file, row_no, row.get("AESTDTC"), ref, ds.where(row))
        return row_fn

    def _judge(self, file: str, row_no: int, aestdtc: Any, ref: tuple[str, str], where: tuple) -> None:
        if iso8601.after(dtc(aestdtc), ref[0]):  # at the precision both have
            label = "end of participation" if ref[1] == "DM.RFPENDTC" else "last contact"
            on = iso8601.date_part(ref[0])
            self.add(file, f"AESTDTC {aestdtc} is after the subject's {label} "
                     f"({ref[1]} {on.isoformat() if on else ref[0]})", row_no, "AESTDTC", aestdtc, *where)

    def end(self, ds: DatasetInfo) -> None:
        current, self._current = self._current, {}
        for u, latest in current.items():
            if ds.name != "DM" or u in self._lacking:
                self._latest.setdefault(u, []).append((ds.name, latest))

    def finish(self) -> None:
        if self._waiting is None:
            return
        final = dict(self._reference)
        for u, per_dataset in self._latest.items():
            best = None
            for _name, latest in sorted(per_dataset, key=lambda item: item[0]):
                best = _later(latest, best, self.ctx.parse)
            final[u] = best
        for file, row_no, u, aestdtc, where in self._waiting:
            ref = final.get(u)
            if ref is not None:
                self._judge(file, row_no, aestdtc, ref, where)
        self.close()

    def close(self) -> None:
        if self._waiting is not None:
            self._waiting.close()
            self._waiting = None


class _Everyone:
    """Membership that holds for every subject (DM's own dates, before we know who lacks RFPENDTC)."""

    def __contains__(self, item: Any) -> bool:
        return True


class AeCodingConsistency(Check):
    """SDTM-AEDECOD-INCONSISTENT: one AETERM (case- and blank-insensitive) coded to one AEDECOD.

    Index: AETERM -> {AEDECOD: [count, first row]}; the rows wait (bounded) until the end
    of the dataset, when the usual coding of each term is known."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._rows: Deferred | None = None
        self._coded: dict[str, dict[Any, list[int]]] = {}

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        if ds.prefix != "AE" or ds.name.startswith("SUPP") or not {"AETERM", "AEDECOD"} <= ds.present:
            return None
        coded = self._coded = {}
        rows = self._rows = Deferred("aedecod")

        def row_fn(row_no: int, row: dict) -> None:
            term, decod = row.get("AETERM"), row.get("AEDECOD")
            if is_null(term) or is_null(decod):
                return
            norm = " ".join(str(term).split()).casefold()
            by_decod = coded.get(norm)
            if by_decod is None:
                by_decod = coded[norm] = {}
            entry = by_decod.get(decod)
            if entry is None:
                by_decod[decod] = [1, row_no]
            else:
                entry[0] += 1
            rows.add((row_no, norm, decod, term, ds.where(row)))
        return row_fn

    def end(self, ds: DatasetInfo) -> None:
        if self._rows is None:
            return
        rows, self._rows = self._rows, None
        coded, self._coded = self._coded, {}
        usual_of: dict[tuple[str, Any], tuple[Any, int]] = {}
        for norm, by_decod in coded.items():
            if len(by_decod) < 2:
                continue
            # the most frequent coding (first seen on ties) is taken as intended; the others are reported
            usual = max(by_decod, key=lambda d: (by_decod[d][0], -by_decod[d][1]))
            for decod in by_decod:
                if decod != usual:
                    usual_of[(norm, decod)] = (usual, by_decod[usual][0])
        if usual_of:
            for row_no, norm, decod, term, where in rows:
                found = usual_of.get((norm, decod))
                if found is not None:
                    self.add(ds.file, f"AETERM {term!r} is coded to AEDECOD {decod!r} here but to {found[0]!r} in "
                             f"{found[1]} other record(s)", row_no, "AEDECOD", decod, *where)
        rows.close()

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()
            self._rows = None


# ARMCD / ACTARMCD values that need no TA arm (SDTMIG 3.x; FDA validator SD0066, SD2002).
ARM_CODES_WITHOUT_TA = {"ARMCD": frozenset({"SCRNFAIL", "NOTASSGN"}),
                        "ACTARMCD": frozenset({"SCRNFAIL", "NOTASSGN", "NOTTRT", "UNPLAN"})}


class ArmCodeCase(Check):
    """SDTM-ARMCD-CASE: DM.ARMCD / ACTARMCD holds an exempt arm code in another case (the
    CDISC pilot's ``Scrnfail`` for SCRNFAIL): one warning per subject naming both variables,
    where SDTM-ARMCD-NOT-IN-TA would have counted it twice as an error (P21 matches the
    exempt codes without case and reports nothing)."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        if ds.name != "DM":
            return None
        plan = [(variable, exempt) for variable, exempt in ARM_CODES_WITHOUT_TA.items() if variable in ds.present]

        def dm_row(row_no: int, row: dict) -> None:
            found = [(variable, row.get(variable)) for variable, exempt in plan
                     if not is_null(row.get(variable)) and row.get(variable) not in exempt
                     and str(row.get(variable)).upper() in exempt]
            if found:
                value = found[0][1]
                self.report(ds, f"{' and '.join(v for v, _ in found)} {value!r}: the exempt arm code is "
                            f"{str(value).upper()!r}, in upper case", row_no, row, ", ".join(v for v, _ in found),
                            value)
        return dm_row


class ArmsInTa(Check):
    """SDTM-ARMCD-NOT-IN-TA: DM.ARMCD / ACTARMCD values are arms of TA (exempt codes aside).

    DM streams first, TA later: DM's non-exempt arm codes wait (one per subject) for TA's arms."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._dm: DatasetInfo | None = None
        self._codes: dict[str, Deferred] = {}
        self._arms: set[Any] | None = None

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        if ds.name == "TA":
            if "ARMCD" not in ds.present:
                return None
            arms = self._arms = set()

            def ta_row(row_no: int, row: dict) -> None:
                value = row.get("ARMCD")
                if not is_null(value):
                    arms.add(value)
            return ta_row
        if ds.name != "DM":
            return None
        self._dm = ds
        self._codes = {variable: Deferred(f"dm-{variable.lower()}") for variable in ARM_CODES_WITHOUT_TA
                       if variable in ds.present}
        plan = [(variable, ARM_CODES_WITHOUT_TA[variable], waiting) for variable, waiting in self._codes.items()]

        def dm_row(row_no: int, row: dict) -> None:
            for variable, exempt, waiting in plan:
                value = row.get(variable)
                if not (is_null(value) or value in exempt):
                    waiting.add((row_no, value, ds.where(row)))
        return dm_row

    def finish(self) -> None:
        dm, arms = self._dm, self._arms
        if dm is not None and arms is not None:
            for variable, waiting in self._codes.items():
                exempt = ARM_CODES_WITHOUT_TA[variable]
                for row_no, value, where in waiting:
                    if value in arms or str(value).upper() in exempt:  # another case: SDTM-ARMCD-CASE's
                        continue
                    self.add(dm.file, f"{variable} {value!r} is not an ARMCD of TA", row_no, variable, value, *where)
        self.close()

    def close(self) -> None:
        for waiting in self._codes.values():
            waiting.close()
        self._codes = {}


class StudyStartDate(Check):
    """SDTM-TS-SSTDTC: TS is there, has TSPARMCD SSTDTC, and its TSVAL is a YYYY-MM-DD date."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._found = 0

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        if ds.name != "TS":
            return None

        def row_fn(row_no: int, row: dict) -> None:
            if row.get("TSPARMCD") != "SSTDTC":
                return
            self._found += 1
            value = row.get("TSVAL")
            if is_null(value) or iso8601.date_part(value) is None or len(str(value).strip()) != 10:
                self.report(ds, "TSVAL of SSTDTC is not a complete ISO 8601 date (YYYY-MM-DD)", row_no, row,
                            "TSVAL", value)
        return row_fn

    def end(self, ds: DatasetInfo) -> None:
        if ds.name == "TS" and not self._found:
            self.report(ds, "TS has no record with TSPARMCD = 'SSTDTC' (study start date)", field="TSPARMCD",
                        value="SSTDTC")

    def finish(self) -> None:
        if self.ctx.fed and "TS" not in self.ctx.fed:
            self.add("ts.xpt", "TS dataset is absent: the study start date (TSPARMCD SSTDTC) cannot be found")

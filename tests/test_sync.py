"""``trialbridge sync push`` against a real FHIR server process: Medplum's FHIR router with its
in-memory repository behind tests/fhir_server/server.mjs (installed here by ``npm ci`` from
the committed package-lock.json when its node_modules is missing, like the validator of
tests/test_fhir_medplum.py), on 127.0.0.1 and a free port, with a bearer token required.

The whole sample is pushed once per session; the tests after it reuse that server state.
"""
from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from tests.node_tools import node_installed
from click.testing import CliRunner

from trialbridge.cli import main
from trialbridge.converters.sync.client import FhirClient, Limits, RetryPolicy
from trialbridge.converters.sync.push import push_resources
from tests.conftest import ROOT, SAMPLE

SERVER = ROOT / "tests" / "fhir_server"
TOKEN = "tb-test-secret-7f3c9e21d4"  # synthetic; must never appear in any output
SAMPLE_COUNTS = {"ResearchStudy": 2, "Patient": 59, "ResearchSubject": 59, "Encounter": 286,
                 "MedicationAdministration": 553, "Observation": 4207, "AdverseEvent": 45}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory):
    node = node_installed(SERVER, "@medplum/fhir-router", "FHIR server")
    port = _free_port()
    log = tmp_path_factory.mktemp("fhir-server") / "server.log"
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "FHIR_TEST_TOKEN": TOKEN}
    with open(log, "wb") as out:
        proc = subprocess.Popen([node, str(SERVER / "server.mjs"), "--port", str(port)], cwd=SERVER, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/admin/stats", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the test FHIR server did not start"
        time.sleep(0.3)
    yield {"base": base, "fhir": f"{base}/fhir/R4", "log": log}
    proc.terminate()
    proc.wait(timeout=20)


def admin(server, what: str, **body):
    return httpx.post(f"{server['base']}/admin/{what}", json=body, timeout=10).json()


def stats(server) -> dict:
    return httpx.get(f"{server['base']}/admin/stats", timeout=10).json()


def search(server, query: str) -> dict:
    return httpx.get(f"{server['fhir']}/{query}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).json()


def versions(server, rtype: str) -> dict[str, str]:
    out, offset = {}, 0
    while True:
        page = search(server, f"{rtype}?_count=1000&_offset={offset}")
        entries = page.get("entry") or []
        out.update({e["resource"]["id"]: e["resource"]["meta"]["versionId"] for e in entries})
        if len(entries) < 1000:
            return out
        offset += 1000


@pytest.fixture(scope="session")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "token"
    path.write_text(TOKEN + "\n", "utf-8")
    return path


def run_push(server, token_file, *args):
    result = CliRunner().invoke(main, ["sync", "push", *map(str, args), "--server", server["fhir"],
                                       "--token-file", str(token_file), "--output-format", "json", "-q"])
    return result


@pytest.fixture(scope="session")
def pushed(fhir_server, token_file, tmp_path_factory):
    """The whole sample pushed once, then again (every test after reuses the server)."""
    started = time.monotonic()
    first = run_push(fhir_server, token_file, SAMPLE)
    first_seconds = time.monotonic() - started
    assert first.exit_code == 0, first.output
    before = {t: versions(fhir_server, t) for t in SAMPLE_COUNTS}
    puts_before = stats(fhir_server)["requests"]["byMethod"].get("PUT", 0)
    posts_before = stats(fhir_server)["requests"]["byMethod"]["POST"]
    second = run_push(fhir_server, token_file, SAMPLE)
    assert second.exit_code == 0, second.output
    after = {t: versions(fhir_server, t) for t in SAMPLE_COUNTS}
    folder = tmp_path_factory.mktemp("sample-fhir") / "fhir"
    done = CliRunner().invoke(main, ["convert", str(SAMPLE), "--to", "fhir", "-o", str(folder), "-q"])
    assert done.exit_code == 0, done.output
    return {"folder": folder, "first": json.loads(first.output), "second": json.loads(second.output), "before": before,
            "after": after, "outputs": [first.output, second.output], "first_seconds": first_seconds,
            "puts": (puts_before, stats(fhir_server)["requests"]["byMethod"].get("PUT", 0)),
            "posts": (posts_before, stats(fhir_server)["requests"]["byMethod"]["POST"])}


def test_the_first_push_creates_every_resource(pushed, fhir_server):
    first = pushed["first"]
    assert first["counts"] == {t: {"created": n, "updated": 0, "unchanged": 0, "failed": 0}
                               for t, n in SAMPLE_COUNTS.items()}
    assert first["totals"] == {"created": 5211, "updated": 0, "unchanged": 0, "failed": 0}
    assert first["failures"] == [] and first["study"] == "NCT04387942"
    assert stats(fhir_server)["counts"] == SAMPLE_COUNTS
    # every resource we wrote has the id we gave it and a business identifier
    obs = search(fhir_server, "Observation?_count=1")["entry"][0]["resource"]
    assert obs["identifier"][0] == {"system": "https://trialbridge.org/fhir/sid/resource-key", "value": obs["id"]}


def test_a_second_identical_push_changes_nothing(pushed):
    second = pushed["second"]
    assert second["counts"] == {t: {"created": 0, "updated": 0, "unchanged": n, "failed": 0}
                                for t, n in SAMPLE_COUNTS.items()}
    assert pushed["after"] == pushed["before"]  # no version moved
    assert {t: len(v) for t, v in pushed["after"].items()} == SAMPLE_COUNTS
    assert pushed["puts"][0] == pushed["puts"][1]  # not one write was sent
    # reads only: 5211 resources read in batches of 100 (53 Bundles, one per chunk of a type)
    assert pushed["posts"][1] - pushed["posts"][0] == second["requests"] == 56


def test_one_changed_lab_value_is_exactly_one_update(pushed, fhir_server, token_file, tmp_path):
    trial = tmp_path / "trial"
    shutil.copytree(SAMPLE, trial)
    path = trial / "lab_results.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert (rows[0]["subject_id"], rows[0]["test"], rows[0]["result"]) == ("001", "ALT", "26")
    rows[0]["result"] = "27"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fhir = tmp_path / "fhir"
    done = CliRunner().invoke(main, ["convert", str(trial), "--to", "fhir", "-o", str(fhir), "-q"])
    assert done.exit_code == 0, done.output
    before = versions(fhir_server, "Observation")

    with _client(fhir_server) as client:
        plan = push_resources(client, fhir, dry_run=True)
    assert plan.dry_run and len(plan.planned) == 1 and plan.planned[0][:2] == ("update", "Observation")
    assert versions(fhir_server, "Observation") == before  # a dry run writes nothing

    with _client(fhir_server) as client:
        summary = push_resources(client, fhir).as_json()
    assert summary["totals"] == {"created": 0, "updated": 1, "unchanged": 5210, "failed": 0}
    assert summary["counts"]["Observation"] == {"created": 0, "updated": 1, "unchanged": 4206, "failed": 0}
    changed_id = plan.planned[0][2]
    after = versions(fhir_server, "Observation")
    assert {k for k in after if after[k] != before[k]} == {changed_id}
    obs = search(fhir_server, f"Observation/{changed_id}")
    assert obs["valueQuantity"]["value"] == 27 and obs["valueQuantity"]["unit"] == "U/L"
    # back as it was: the sample again is one update the other way
    with _client(fhir_server) as client:
        back = push_resources(client, pushed["folder"]).as_json()
    assert back["totals"] == {"created": 0, "updated": 1, "unchanged": 5210, "failed": 0}


# ----------------------------------------------------------------------------- faults, on small inputs


def _patients(folder, n: int, prefix: str, bad: int | None = None):
    """n new Patients (synthetic, ids and identifiers of their own) in folder/Patient.ndjson."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        pid = f"00000000-0000-4000-8000-{prefix}{i:04d}"
        res = {"resourceType": "Patient", "id": pid,
               "identifier": [{"system": "https://trialbridge.org/fhir/sid/subject-id", "value": f"T{prefix}{i}"}],
               "gender": "female", "birthDate": "1990-01-0" + str(i % 9 + 1)}
        if i == bad:
            res["birthDate"] = "the first of May"
        lines.append(json.dumps(res))
    (folder / "Patient.ndjson").write_text("\n".join(lines) + "\n", "utf-8")
    return folder


def _client(server, **retry):
    return FhirClient(server["fhir"], TOKEN, retry=RetryPolicy(**{"attempts": 4, "backoff": 0.05, **retry}))


def test_500_twice_then_success_is_retried(pushed, fhir_server, tmp_path):
    folder = _patients(tmp_path / "p", 3, "50000")
    admin(fhir_server, "faults", count=2, status=500)
    with _client(fhir_server) as client:
        summary = push_resources(client, folder)
    assert summary.counts["Patient"] == {"created": 3}
    assert summary.failures == [] and summary.retries == 2
    assert summary.requests == 4  # read: 2 failed + 1; write: 1 transaction


def test_429_waits_what_retry_after_says(pushed, fhir_server, tmp_path):
    folder = _patients(tmp_path / "p", 2, "42900")
    admin(fhir_server, "faults", count=1, status=429, retryAfter=2)
    with _client(fhir_server) as client:
        started = time.monotonic()
        summary = push_resources(client, folder)
        elapsed = time.monotonic() - started
    assert summary.counts["Patient"] == {"created": 2} and summary.retries == 1
    assert elapsed >= 2.0  # the server's 2 s, not the 0.05 s backoff


def test_a_dropped_connection_is_retried(pushed, fhir_server, tmp_path):
    folder = _patients(tmp_path / "p", 2, "10400")
    admin(fhir_server, "faults", count=2, drop=True)
    with _client(fhir_server) as client:
        summary = push_resources(client, folder)
    assert summary.counts["Patient"] == {"created": 2} and summary.retries == 2


def test_a_server_that_stays_down_stops_with_one_line(pushed, fhir_server, token_file, tmp_path):
    folder = _patients(tmp_path / "p", 2, "99900")
    admin(fhir_server, "faults", count=4, status=503)
    with _client(fhir_server, attempts=3) as client:
        from trialbridge.converters.core.issues import TrialbridgeError

        with pytest.raises(TrialbridgeError, match=r"POST failed 3 times \(HTTP 503\); run again to resume"):
            push_resources(client, folder)
    admin(fhir_server, "faults", count=0)
    with _client(fhir_server) as client:  # the next run writes them
        assert push_resources(client, folder).counts["Patient"] == {"created": 2}


def test_one_bad_resource_fails_alone_with_the_servers_outcome(pushed, fhir_server, tmp_path):
    folder = _patients(tmp_path / "p", 6, "40000", bad=3)
    with _client(fhir_server) as client:
        summary = push_resources(client, folder)
    assert summary.counts["Patient"] == {"created": 5, "failed": 1}
    [failure] = summary.failures
    assert (failure.resource_id, failure.status) == ("00000000-0000-4000-8000-400000003", 400)
    assert failure.outcome == "error structure: Invalid date format (Patient.birthDate)"
    assert [i.code for i in summary.log.issues] == ["SYNC-RESOURCE-FAILED"]
    got = search(fhir_server, "Patient?identifier=https://trialbridge.org/fhir/sid/subject-id|T400004")
    assert got["total"] == 1


def test_conditional_updates_respect_the_servers_cap(pushed, fhir_server, tmp_path):
    """Nine changed Patients: the server refuses a transaction with conditional entries beyond
    8, so they go as 8 + 1."""
    folder = _patients(tmp_path / "p", 9, "80000")
    with _client(fhir_server) as client:
        assert push_resources(client, folder).counts["Patient"] == {"created": 9}
    lines = [json.loads(x) for x in (folder / "Patient.ndjson").read_text().splitlines()]
    for res in lines:
        res["gender"] = "male"
    (folder / "Patient.ndjson").write_text("\n".join(json.dumps(r) for r in lines) + "\n", "utf-8")
    with _client(fhir_server) as client:
        summary = push_resources(client, folder)
    assert summary.counts["Patient"] == {"updated": 9} and summary.failures == []
    assert summary.requests == 3  # one batch read, two transactions
    with _client(fhir_server) as client:
        client.limits = Limits(conditional_transaction=50)  # a client that ignores the cap is refused
        for res in lines:
            res["gender"] = "other"
        (folder / "Patient.ndjson").write_text("\n".join(json.dumps(r) for r in lines) + "\n", "utf-8")
        summary = push_resources(client, folder)
    # refused as a transaction, the same entries then went as a batch (no cap): all written
    assert summary.counts["Patient"] == {"updated": 9} and summary.requests == 3


def test_the_token_never_appears_and_is_required(pushed, fhir_server, tmp_path):
    for text in pushed["outputs"]:
        assert TOKEN not in text
    assert TOKEN not in fhir_server["log"].read_text("utf-8")
    result = CliRunner().invoke(main, ["sync", "push", str(SAMPLE), "--server", fhir_server["fhir"], "-q"],
                                env={"TRIALBRIDGE_FHIR_TOKEN": ""})
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: http://127.0.0.1:")
    assert "HTTP 401: error login: a valid bearer token is required" in result.output
    assert TOKEN not in result.output and "Traceback" not in result.output


def test_usage_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["sync", "push", str(SAMPLE), "--server", "ftp://x", "-q"])
    assert result.exit_code == 2 and "must be an http(s) FHIR base URL" in result.output
    result = CliRunner().invoke(main, ["sync", "push", str(SAMPLE), "--server", "http://127.0.0.1:9/fhir",
                                       "--token-file", str(tmp_path / "none"), "-q"])
    assert result.exit_code == 2 and "cannot read the token file" in result.output


# ----------------------------------------------------------------------------- pull


def run_pull(server, token_file, output, *args):
    return CliRunner().invoke(main, ["sync", "pull", "--server", server["fhir"], "--study", "NCT04387942",
                                     "-o", str(output), "--token-file", str(token_file), "--output-format", "json",
                                     "-q", *map(str, args)])


def _decimal_or_none(text):
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _sdtm(source, out):
    done = CliRunner().invoke(main, ["convert", str(source), "--to", "sdtm", "--format", "csv", "-o", str(out), "-q"])
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture(scope="module")
def pulled(pushed, fhir_server, token_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("pull") / "records"
    result = run_pull(fhir_server, token_file, out)
    assert result.exit_code == 0, result.output
    return {"out": out, "summary": json.loads(result.output)}


def test_a_pull_reads_every_subjects_data_into_records(pulled):
    summary = pulled["summary"]
    assert summary["counts"] == {t: {"created": n, "updated": 0, "unchanged": 0, "failed": 0}
                                 for t, n in SAMPLE_COUNTS.items()}
    assert summary["since"] is None and summary["failures"] == []
    state = json.loads((pulled["out"] / "sync-state.json").read_text())
    assert state["watermark"] == summary["watermark"] and state["study"] == "NCT04387942"
    # the test Patients pushed above have no ResearchSubject: not pulled
    assert sum(1 for _ in open(pulled["out"] / "sync-fhir-Patient.ndjson")) == 59


def test_pulled_records_give_the_samples_sdtm(pulled, tmp_path):
    """Same SDTM as from the sample, but for one thing the server does: Medplum keeps FHIR
    decimals as JavaScript numbers, so 1.30 comes back as 1.3 (docs/sync.md)."""
    ours = _sdtm(pulled["out"], tmp_path / "pulled")
    theirs = _sdtm(SAMPLE, tmp_path / "sample")
    names = sorted(p.name for p in theirs.glob("*.csv"))
    assert names == sorted(p.name for p in ours.glob("*.csv"))
    identical, trailing_zero_cells = [], 0
    for name in names:
        a = list(csv.reader(open(theirs / name, newline="", encoding="utf-8")))
        b = list(csv.reader(open(ours / name, newline="", encoding="utf-8")))
        assert len(a) == len(b), name
        if a == b:
            identical.append(name)
            continue
        for row_a, row_b in zip(a, b):
            for x, y in zip(row_a, row_b, strict=True):
                if x != y:  # only a decimal's trailing zeros, nothing else
                    assert "." in x and x.rstrip("0").rstrip(".") == y and _decimal_or_none(x) == _decimal_or_none(y), (name, x, y)
                    trailing_zero_cells += 1
    assert identical == ["ae.csv", "dm.csv", "ds.csv", "ex.csv", "se.csv", "suppae.csv", "suppdm.csv", "sv.csv",
                         "ta.csv", "te.csv", "ti.csv", "ts.csv", "tv.csv"]
    # every cell of the sample's own input with a trailing-zero decimal is one such cell or more
    assert trailing_zero_cells > 0


def _new_results(tmp_path, rows, sample_fhir):
    """What convert --to fhir builds for the sample plus ``rows`` of new lab results: the new
    Observations only."""
    trial = tmp_path / "trial"
    shutil.copytree(SAMPLE, trial)
    with open(trial / "lab_results.csv", "a", encoding="utf-8") as fh:
        fh.writelines(r + "\n" for r in rows)
    fhir = tmp_path / "fhir"
    done = CliRunner().invoke(main, ["convert", str(trial), "--to", "fhir", "-o", str(fhir), "-q"])
    assert done.exit_code == 0, done.output
    known = {json.loads(x)["id"] for x in open(sample_fhir / "Observation.ndjson")}
    new = [r for r in (json.loads(x) for x in open(fhir / "Observation.ndjson")) if r["id"] not in known]
    assert len(new) == len(rows)
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "Observation.ndjson").write_text("\n".join(json.dumps(r) for r in new) + "\n", "utf-8")
    return folder


def _lab_rows(path) -> int:
    return sum(1 for _ in open(path / "lab_results.csv", encoding="utf-8")) - 1


def test_an_incremental_pull_fetches_only_the_new_results(pushed, pulled, fhir_server, token_file, tmp_path):
    out = tmp_path / "records"
    shutil.copytree(pulled["out"], out)
    before_rows = _lab_rows(out)
    assert before_rows == 2827
    new = _new_results(tmp_path / "a", ["001,MONTH 6,2020-11-27T09:00,ALT,31,U/L,5,40,SERUM,,A20060099",
                                        "001,MONTH 6,2020-11-27T09:00,AST,22,U/L,15,50,SERUM,,A20060099"],
                       pushed["folder"])
    with _client(fhir_server) as client:
        assert push_resources(client, new).counts["Observation"] == {"created": 2}
    result = run_pull(fhir_server, token_file, out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["since"] == pulled["summary"]["watermark"]
    assert summary["counts"]["Observation"] == {"created": 2, "updated": 0, "unchanged": 0, "failed": 0}
    for rtype in ("Encounter", "MedicationAdministration", "AdverseEvent"):
        assert summary["counts"][rtype] == {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
    # the study and its subjects are read whole each time: unchanged
    assert summary["counts"]["Patient"] == {"created": 0, "updated": 0, "unchanged": 59, "failed": 0}
    assert _lab_rows(out) == before_rows + 2
    with open(out / "lab_results.csv", encoding="utf-8") as fh:
        added = [r for r in csv.DictReader(fh) if r["collected"].startswith("2020-11-27T09:00")]
    assert sorted((r["subject_id"], r["test"], r["result"]) for r in added) == [("001", "ALT", "31"),
                                                                               ("001", "AST", "22")]


def test_a_server_that_goes_away_mid_pull_loses_and_doubles_nothing(pushed, pulled, fhir_server, token_file,
                                                                    tmp_path):
    out = tmp_path / "records"
    shutil.copytree(pulled["out"], out)
    state_before = (out / "sync-state.json").read_bytes()
    labs_before = (out / "lab_results.csv").read_bytes()
    new = _new_results(tmp_path / "b", ["002,MONTH 6,2020-12-01T09:00,ALT,19,U/L,5,40,SERUM,,A20060098"],
                       pushed["folder"])
    with _client(fhir_server) as client:
        assert push_resources(client, new).counts["Observation"] == {"created": 1}
    # the server answers the study searches, then every connection drops (more than retried)
    admin(fhir_server, "faults", count=50, drop=True, after=3)
    failed = run_pull(fhir_server, token_file, out, "--retries", "2")
    admin(fhir_server, "faults", count=0)
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    assert "failed 2 times (RemoteProtocolError); run again to resume" in failed.output
    assert (out / "sync-state.json").read_bytes() == state_before  # nothing published
    assert (out / "lab_results.csv").read_bytes() == labs_before
    again = run_pull(fhir_server, token_file, out)
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assert summary["since"] == json.loads(state_before)["watermark"]  # resumed from the old watermark
    # every result added since the first pull (this one, and any an earlier test added): each once
    extra = len(versions(fhir_server, "Observation")) - 4207
    assert extra >= 1
    assert summary["counts"]["Observation"] == {"created": extra, "updated": 0, "unchanged": 0, "failed": 0}
    ids = [json.loads(x)["id"] for x in open(out / "sync-fhir-Observation.ndjson")]
    assert len(ids) == len(set(ids)) == 4207 + extra
    assert _lab_rows(out) == 2827 + extra


def test_paging_by_offset_gives_the_same_records(pulled, fhir_server, tmp_path):
    from trialbridge.converters.sync.pull import pull

    client = FhirClient(fhir_server["fhir"], TOKEN, limits=Limits(page_size=25, batch_reads=40),
                        retry=RetryPolicy(attempts=3, backoff=0.05))
    with client:
        summary = pull(client, "NCT04387942", tmp_path / "records")
    extra = len(versions(fhir_server, "Observation")) - 4207
    assert summary.totals()["created"] == 5211 + extra
    assert summary.counts["Observation"]["created"] == 4207 + extra
    assert _lab_rows(tmp_path / "records") == 2827 + extra
    assert (tmp_path / "records" / "adverse_events.csv").read_bytes() == \
        (pulled["out"] / "adverse_events.csv").read_bytes()


# ----------------------------------------------------------------------------- Bulk Data $export


def run_export(server, token_file, output, *args):
    return CliRunner().invoke(main, ["sync", "export", "--server", server["fhir"], "--study", "NCT04387942",
                                     "-o", str(output), "--token-file", str(token_file), "--output-format", "json",
                                     "-q", *map(str, args)])


def test_export_then_sdtm_is_the_same_as_pull(pulled, fhir_server, token_file, tmp_path):
    out = tmp_path / "fhir"
    result = run_export(fhir_server, token_file, out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    extra = len(versions(fhir_server, "Observation")) - 4207  # results the pull tests added
    assert summary["counts"] == {t: {"created": n + (extra if t == "Observation" else 0), "updated": 0,
                                     "unchanged": 0, "failed": 0} for t, n in SAMPLE_COUNTS.items()}
    assert summary["job_deleted"] is True and stats(fhir_server)["jobs"] == 0
    assert summary["files"] == ["AdverseEvent-1.ndjson", "Encounter-1.ndjson", "MedicationAdministration-1.ndjson",
                                "Observation-1.ndjson", "Patient-1.ndjson", "ResearchSubject-1.ndjson"]
    # the same records as a pull of the same server state, hence the same SDTM
    records = tmp_path / "pulled"
    assert run_pull(fhir_server, token_file, records).exit_code == 0
    a, b = _sdtm(out, tmp_path / "sdtm-export"), _sdtm(records, tmp_path / "sdtm-pull")
    names = sorted(p.name for p in a.glob("*.csv"))
    assert len(names) == 17 and names == sorted(p.name for p in b.glob("*.csv"))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_export_of_a_group_since_an_instant(pushed, pulled, fhir_server, token_file, tmp_path):
    """A Group of subjects 003 and 004; since the first pull, one new result for 003 and one for
    005 (not in the group): the export holds 003's alone."""
    patients = {p["identifier"][0]["value"]: f"Patient/{p['id']}"
                for p in (json.loads(x) for x in open(pulled["out"] / "sync-fhir-Patient.ndjson"))}
    group = {"resourceType": "Group", "id": "two", "type": "person", "actual": True,
             "member": [{"entity": {"reference": patients[s]}} for s in ("003", "004")]}
    new = _new_results(tmp_path / "c", ["003,MONTH 6,2020-12-02T09:00,ALT,29,U/L,5,40,SERUM,,A20060097",
                                        "005,MONTH 6,2020-12-17T09:00,ALT,33,U/L,5,40,SERUM,,A20060096"],
                       pushed["folder"])
    with _client(fhir_server) as client:
        assert client.send("PUT", "Group/two", group).status_code in (200, 201)
        assert push_resources(client, new).counts["Observation"] == {"created": 2}
    since = pulled["summary"]["watermark"]
    result = run_export(fhir_server, token_file, tmp_path / "fhir", "--group", "two", "--since", since)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert {t: c["created"] for t, c in summary["counts"].items()} == {"Observation": 1, "ResearchStudy": 2}
    [obs] = [json.loads(x) for x in open(tmp_path / "fhir" / "Observation-1.ndjson")]
    assert obs["subject"]["reference"] == patients["003"] and obs["valueQuantity"]["value"] == 29


def test_a_server_that_caps_pages_is_followed_by_its_next_links(pulled, fhir_server, tmp_path):
    """Pages of at most 10 whatever _count asks, a `next` link and no total (test switch):
    only following the links gets everything."""
    from trialbridge.converters.sync.pull import pull

    admin(fhir_server, "paging", maxCount=10)
    try:
        with FhirClient(fhir_server["fhir"], TOKEN, limits=Limits(page_size=25)) as client:
            summary = pull(client, "NCT04387942", tmp_path / "records")
    finally:
        admin(fhir_server, "paging", maxCount=0)
    extra = len(versions(fhir_server, "Observation")) - 4207
    assert summary.counts["Observation"]["created"] == 4207 + extra
    assert summary.counts["ResearchSubject"]["created"] == 59
    assert _lab_rows(tmp_path / "records") == 2827 + extra

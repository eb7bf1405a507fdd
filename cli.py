"""trialbridge command line: parse options, call one function of ``converters``, print,
set the exit code (0 ok, 1 findings at or above --fail-on, 2 usage or I/O failure, 3 internal
error).  Every command has examples in its --help (-h), says what to do next, and colours only
on a terminal (never with NO_COLOR)."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from trialbridge.converters.core.files import printable
from trialbridge.converters.core.issues import TrialbridgeError


_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Group(click.Group):
    """Turns our own errors and usage errors into one red line; tracebacks only with --verbose."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NoArgsIsHelp as exc:  # bare `trialbridge`: the help text, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # unknown option, missing --to, a value out of range …
            command = exc.ctx.command_path if exc.ctx is not None else (prog_name or "trialbridge")
            click.secho(f"error: {printable(_one_line(exc.format_message()))} (see '{command} --help')", fg="red", err=True, color=_colour())
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.secho(f"error: {printable(_one_line(exc.format_message()))}", fg="red", err=True, color=_colour())
            sys.exit(exc.exit_code)
        except click.Abort:
            click.secho("aborted", fg="red", err=True, color=_colour())
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TrialbridgeError as exc:
            if ctx.params.get("verbose"):
                traceback.print_exc()
            click.secho(f"error: {printable(exc)}", fg="red", err=True, color=_colour())
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug of ours: one line, traceback only on request
            if ctx.params.get("verbose"):
                traceback.print_exc()
            click.secho(f"internal error (please report): {type(exc).__name__}: {printable(exc)}; "
                        "run with --verbose for the traceback", fg="red", err=True, color=_colour())
            ctx.exit(3)


MAIN_EPILOG = """\b
Examples:
  trialbridge convert samples/nct04387942 --to sdtm -o out/sdtm
  trialbridge validate out/sdtm --report out/report.xlsx
  trialbridge report out/sdtm -o out/review.html
  trialbridge sync push samples/nct04387942 --server https://ehr.example.org/fhir/R4

\b
Exit codes: 0 ok; 1 findings at or above --fail-on (convert: errors); 2 usage or I/O
failure; 3 internal error (--verbose shows the traceback).
Colour only on a terminal, none when NO_COLOR is set.
Shell completion: eval "$(_TRIALBRIDGE_COMPLETE=bash_source trialbridge)" (zsh_source, fish_source)."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trialbridge")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


def _colour() -> bool | None:
    """None: click decides (colour on a terminal only); False when NO_COLOR is set (no-color.org)."""
    import os

    return False if os.environ.get("NO_COLOR") else None


def _beside(folder: Path, name: str) -> Path:
    """A file next to ``folder``, not in it (validate never writes into the data it checks)."""
    return folder.parent / f"{folder.name}-{name}"


def next_step(text: str) -> None:
    """The one line after a command that says what to do next."""
    click.echo(printable(f"next: {text}"))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=MAIN_EPILOG,
             invoke_without_command=True)
@click.version_option(_version(), "--version", prog_name="trialbridge", message="%(prog)s %(version)s")
@click.option("--verbose", is_flag=True, help="Show tracebacks for failures.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Convert clinical trial data between internal records, FHIR and CDISC SDTM."""
    if ctx.invoked_subcommand is None:  # bare `trialbridge`: the help, on stdout, exit 0
        click.echo(ctx.get_help())
        ctx.exit(0)


def _summary(result, limit: int = 20) -> None:
    counts = result.counts
    for issue in result.log.sorted()[:limit]:
        if issue.severity == "info":
            continue
        where = ":".join(str(x) for x in (issue.file, issue.record) if x not in (None, ""))
        field = f" {issue.field}" if issue.field else ""
        value = f" [{issue.value}]" if issue.value not in (None, "") else ""
        # paths and values from the input may hold control characters (an escape sequence in a
        # file name): escaped here, issues.json keeps the exact text
        click.echo(printable(f"  {issue.severity:7} {issue.code:26} {where}{field}{value}: {issue.message}"))
    click.echo(f"{counts.get('error', 0)} error(s), {counts.get('warning', 0)} warning(s), "
               f"{counts.get('info', 0)} info")


CONVERT_EPILOG = """\b
Examples:
  trialbridge convert samples/nct04387942 --to sdtm -o out/sdtm --format xpt,dataset-json
  trialbridge convert samples/nct04387942-odm/edc-export.xml --to sdtm -o out/sdtm
  trialbridge convert hospital-export.json --to sdtm -o out/sdtm --study NCT04387942
  trialbridge convert out/sdtm --to fhir -o out/fhir --format bundle
  trialbridge convert big-export/ --to sdtm -o out/sdtm --workers 0"""


@main.command(epilog=CONVERT_EPILOG)
@click.argument("input_path", type=click.Path(path_type=Path))
@click.option("--to", "to", required=True, type=click.Choice(["sdtm", "records", "fhir"]), help="What to produce.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--format", "formats", default=None,
              help="SDTM: xpt (default), dataset-json, csv, comma separated. FHIR: ndjson (default, "
                   "<ResourceType>.ndjson) or bundle (bundle.json).")
@click.option("--bundle-type", default="collection", type=click.Choice(["collection", "transaction"]),
              show_default=True, help="Bundle type with --format bundle.")
@click.option("--fhir-version", default="R4", type=click.Choice(["R4", "R5"]), show_default=True,
              help="FHIR version written.")
@click.option("--input-fhir-version", default="auto", type=click.Choice(["auto", "R4", "R5"]), show_default=True,
              help="FHIR version of the input; auto detects it from the resources' shape.")
@click.option("--link-subjects", type=click.Path(path_type=Path), default=None,
              help="FHIR input from an EHR: a records folder (or its subjects.csv) whose medical_record_number "
                   "links Patients without a trial subject id to their trial subject.")
@click.option("--study", "study", default=None, help="Study id or study configuration YAML (default: the study the input names).")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Processes that map subjects (0: one per core; default: one per core for inputs of 20,000 "
                   "records or more, else 1).  Output is the same bytes for any number.")
@click.option("--engine", "engine_name", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: this machine's processes; dask: a dask.distributed cluster (--scheduler, or a local one).")
@click.option("--scheduler", default=None, help="With --engine dask: the scheduler address (tcp://host:8786).")
@click.option("--pseudonymise-key-file", "key_file", type=click.Path(path_type=Path), default=None,
              envvar="TRIALBRIDGE_PSEUDONYMISE_KEY_FILE", show_envvar=True,
              help="To SDTM: USUBJID and SUBJID become keyed pseudonyms (HMAC-SHA256) under the secret in this "
                   "file (never on the command line). Same key, same pseudonyms.")
@click.option("--ct", "ct_package", default=None, metavar="DATE",
              help="CDISC SDTM CT package (a bundled package date; default 2025-03-28).")
@click.option("--meddra", "meddra", type=click.Path(path_type=Path), default=None,
              help="Folder of a licensed MedDRA ASCII distribution (MedAscii: llt.asc, pt.asc, mdhier.asc …): "
                   "adverse events are coded from their LLT or PT and given codes are checked.")
@click.option("--meddra-version", default=None,
              help="MedDRA version for define.xml when the folder has no meddra_release.asc (or no folder is given).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def convert(input_path: Path, to: str, output: Path, formats: str | None, bundle_type: str, fhir_version: str,
            input_fhir_version: str, link_subjects: Path | None, study: str | None, workers: int | None, engine_name: str,
            scheduler: str | None, key_file: Path | None, ct_package: str | None, meddra: Path | None,
            meddra_version: str | None, quiet: bool) -> None:
    """Convert INPUT_PATH (records folder, SDTM folder, FHIR Bundle/NDJSON) to --to."""
    from trialbridge.converters.engine import default_workers
    from trialbridge.converters.pipeline import convert as run

    result = run(input_path, to, output, formats=formats, study_ref=study, bundle_type=bundle_type,
                 fhir_version=fhir_version, input_fhir_version=input_fhir_version, link_subjects=link_subjects,
                 workers=default_workers() if workers == 0 else workers, engine_name=engine_name, scheduler=scheduler,
                 progress=not quiet and sys.stderr.isatty(), pseudonymise_key_file=key_file, ct_package=ct_package,
                 meddra=meddra, meddra_version=meddra_version)
    files = [p for p in result.written if p.name != "issues.json"]
    click.echo(printable(f"{result.kind} -> {to}: {len(files)} file(s) written to {output} (study {result.study_id})"))
    _summary(result)
    click.echo(printable(f"findings: {output / 'issues.json'}"))
    if to == "sdtm":
        next_step(f"trialbridge validate {output} --report {_beside(output, 'report.html')}"
                  + (" (and fix the errors above first)" if result.log.has_errors else ""))
    elif to == "records":
        next_step(f"check {output}, then trialbridge convert {output} --to sdtm -o <folder>")
    else:
        next_step(f"trialbridge validate {output}, or trialbridge sync push {output} --server <FHIR base URL>")
    sys.exit(1 if result.log.has_errors else 0)


def _rule_ids(text: str | None) -> list[str] | None:
    return [p.strip().upper() for p in text.split(",") if p.strip()] if text else None


VALIDATE_EPILOG = """\b
Examples:
  trialbridge validate out/sdtm
  trialbridge validate out/sdtm --report out/report.xlsx --fail-on warning
  trialbridge validate legacy/sdtm --sdtmig 3.2 --exclude SDTM-KEY-DUPLICATE
  trialbridge validate out/sdtm --output-format json > findings.json
  trialbridge validate out/fhir"""


@main.command(epilog=VALIDATE_EPILOG)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Write every finding to this file: .html (browsable page), .xlsx (Excel, Pinnacle 21's sheets: "
                   "Dataset Summary, Issue Summary, Details, Rules) or .json.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="error", show_default=True,
              help="Exit 1 when there are findings at or above this severity.")
@click.option("--rules", "rules", default=None, help="Run only these rule ids (comma separated; docs/rules.md).")
@click.option("--exclude", default=None, help="Leave out these rule ids (comma separated).")
@click.option("--ct", "ct_package", default=None, metavar="DATE",
              help="CDISC SDTM CT package to check against (a bundled package date; default 2025-03-28).")
@click.option("--meddra", "meddra", type=click.Path(path_type=Path), default=None,
              help="Folder of a licensed MedDRA ASCII distribution (MedAscii: llt.asc, pt.asc, mdhier.asc …): "
                   "the AE MedDRA variables are checked against it.")
@click.option("--meddra-version", default=None,
              help="MedDRA version for define.xml when the folder has no meddra_release.asc (or no folder is given).")
@click.option("--sdtmig", type=click.Choice(["3.2", "3.3", "3.4"]), default=None,
              help="SDTMIG version to check against (default: what define.xml or TS SDTIGVER says, else 3.3).")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="What is printed: the summary as text, or every finding and rule status as JSON.")
def validate(path: Path, report: Path | None, fail_on: str, rules: str | None, exclude: str | None,
             ct_package: str | None, meddra: Path | None, meddra_version: str | None, sdtmig: str | None,
             output_format: str) -> None:
    """Check an SDTM folder (schemas, conformance rules, define.xml, every copy of a dataset
    in other formats) or FHIR output (R4 schema, models, references)."""
    from trialbridge.converters.pipeline import validate as run

    result = run(path, report, rules=_rule_ids(rules), exclude=_rule_ids(exclude), sdtmig=sdtmig, ct_package=ct_package,
                 meddra=meddra, meddra_version=meddra_version)
    failing = ("error",) if fail_on == "error" else ("error", "warning")
    failed = any(i.severity in failing for i in result.log.issues)
    if output_format == "json":  # for scripts: the findings (as issues.json has them) and the rules run
        import orjson

        doc = {**result.log.to_json_obj(), "rules_run": result.rules, "fail_on": fail_on, "failed": failed}
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        sys.exit(1 if failed else 0)
    click.echo(printable(f"validated {path} (study {result.study_id})"))
    _summary(result, limit=50)
    if result.rules:
        ran = {s: sum(1 for r in result.rules if r["status"] == s) for s in ("issues", "ran", "skipped")}
        click.echo(f"rules: {ran['issues']} found issues, {ran['ran']} ran clean, {ran['skipped']} skipped")
    if failed:
        next_step(f"fix the findings at or above {fail_on} and validate again"
                  + ("" if report else f"; --report {_beside(path, 'report.html')} lists them all"))
    elif report:
        next_step(f"open {report}")
    else:
        next_step(f"trialbridge report {path} -o review.html (a page of the study and its findings)")
    sys.exit(1 if failed else 0)


@main.command(epilog="""\b
Examples:
  trialbridge report out/sdtm -o out/review.html
  trialbridge report out/sdtm -o out/review.html --issues out/sdtm/issues.json""")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The review page (.html).")
@click.option("--study", "study", default=None,
              help="Study id or configuration YAML (default: the bundled configuration of the study DM names, if any).")
@click.option("--issues", type=click.Path(path_type=Path), default=None,
              help="Take the findings from this issues.json instead of validating the folder.")
def report(folder: Path, output: Path, study: str | None, issues: Path | None) -> None:
    """Write a study review page of an SDTM FOLDER: enrolment and disposition, a swimmer plot,
    trajectories by visit, AEs by SOC and PT, each beside its validation findings.  One
    self-contained HTML file (nothing is fetched when it is viewed)."""
    from trialbridge.converters.review import review_folder

    result = review_folder(folder, output, study_ref=study, issues=issues)
    plots = ", ".join(f"{k} {v}" for k, v in sorted(result.plots.items()))
    click.echo(printable(f"review page of {folder} (study {result.study_id}) written to {output}"))
    click.echo(printable(f"plots (data points): {plots}; findings: {result.findings} ({result.findings_source})"))
    next_step(f"open {output} in a browser (it loads nothing from anywhere)")


@main.command("init-study", epilog="""\b
Examples:
  trialbridge init-study ../shared/reference/sdtm/cdiscpilot01 -o pilot.yaml
  trialbridge init-study legacy/define.xml -o mappings/studies/legacy.yaml""")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The study configuration to write (e.g. mappings/studies/<id>.yaml).")
def init_study(source: Path, output: Path) -> None:
    """Draft a study configuration from an SDTM folder's trial design (TS, TA, TE, TV, TI, DM,
    SV, EX; its define.xml too) or from a define.xml.  What could not be inferred is listed
    under todo: in the file."""
    from trialbridge.converters.pipeline import init_study as run

    result = run(source, output)
    click.echo(printable(f"study {result.study_id}: configuration drafted to {output}"))
    click.echo(f"{len(result.todo)} thing(s) to check or fill in (todo: in the file):")
    for line in result.todo:
        click.echo(printable(f"  - {line}"))
    next_step(f"fill in the todo: list of {output}, then convert with --study {output}")


# ----------------------------------------------------------------------------- sync with a FHIR server


@main.group(epilog="""\b
Examples:
  trialbridge sync push samples/nct04387942 --server https://ehr.example.org/fhir/R4 --dry-run
  trialbridge sync pull --server https://ehr.example.org/fhir/R4 --study NCT04387942 -o out/records
  trialbridge sync export --server https://ehr.example.org/fhir/R4 --study NCT04387942 -o out/fhir""")
def sync() -> None:
    """Keep a FHIR server and the trial in step (docs/sync.md).  The bearer token comes from
    --token-file or the TRIALBRIDGE_FHIR_TOKEN environment variable, never the command line."""


def _server_options(fn):
    fn = click.option("--server", required=True, help="FHIR base URL, e.g. https://ehr.example.org/fhir/R4.")(fn)
    fn = click.option("--token-file", type=click.Path(path_type=Path), default=None,
                      help="File holding the bearer token (else TRIALBRIDGE_FHIR_TOKEN).")(fn)
    fn = click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
                      help="Seconds to wait for one answer.")(fn)
    fn = click.option("--retries", type=click.IntRange(1, 20), default=6, show_default=True,
                      help="Attempts per request on 429, 5xx and lost connections.")(fn)
    fn = click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
                      help="Summary as text or JSON.")(fn)
    fn = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(fn)
    return fn


def _client(server: str, token_file: Path | None, timeout: float, retries: int):
    from trialbridge.converters.sync.client import FhirClient, RetryPolicy, read_token

    return FhirClient(server, read_token(token_file), timeout=timeout, retry=RetryPolicy(attempts=retries))


def _sync_report(summary, output_format: str) -> None:
    import json

    if output_format == "json":
        click.echo(json.dumps(summary.as_json(), indent=2, sort_keys=False))
    else:
        from trialbridge.converters.sync import summary_lines

        for line in summary_lines(summary):
            click.echo(printable(line))
        for issue in [i for i in summary.log.sorted() if i.severity != "info"][:20]:
            where = ":".join(str(x) for x in (issue.file, issue.record) if x not in (None, ""))
            click.echo(printable(f"  {issue.severity:7} {issue.code:26} {where}: {issue.message}"))
    sys.exit(1 if summary.failures or summary.log.has_errors else 0)


@sync.command("push", epilog="""\b
Example:
  trialbridge sync push samples/nct04387942 --server https://ehr.example.org/fhir/R4 --token-file tok --dry-run""")
@click.argument("input_path", type=click.Path(path_type=Path))
@_server_options
@click.option("--study", "study", default=None, help="Study id or study configuration YAML (default: the study the input names).")
@click.option("--dry-run", is_flag=True, help="Read the server and say what would change; write nothing.")
def sync_push(input_path: Path, server: str, token_file: Path | None, timeout: float, retries: int,
              output_format: str, quiet: bool, study: str | None, dry_run: bool) -> None:
    """Send the trial INPUT_PATH (records, SDTM, ODM, FHIR) to --server: created, updated,
    unchanged or failed per resource type; a second identical push changes nothing."""
    from trialbridge.converters.sync.push import push

    with _client(server, token_file, timeout, retries) as client:
        summary = push(input_path, client, study_ref=study, dry_run=dry_run,
                       progress=not quiet and sys.stderr.isatty())
    _sync_report(summary, output_format)


@sync.command("pull", epilog="""\b
Example:
  trialbridge sync pull --server https://ehr.example.org/fhir/R4 --study NCT04387942 -o out/records --since 2021-03-01T00:00:00Z""")
@_server_options
@click.option("--study", "study", required=True, help="Study id as the server's ResearchStudy.identifier has it.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Records folder; a folder of an earlier pull is brought up to date from its watermark.")
@click.option("--since", default=None, help="First pull only: what changed on the server since this instant "
              "(ISO 8601, e.g. 2021-03-01T00:00:00Z); later pulls go on from the stored watermark.")
@click.option("--code", "codes", multiple=True, help="Observation codes to pull (system|code, repeatable; default all).")
def sync_pull(server: str, token_file: Path | None, timeout: float, retries: int, output_format: str, quiet: bool,
              study: str, output: Path, since: str | None, codes: tuple[str, ...]) -> None:
    """Read the study's subjects' labs, doses, visits and AEs from --server into a records folder."""
    from trialbridge.converters.sync.pull import pull

    with _client(server, token_file, timeout, retries) as client:
        summary = pull(client, study, output, since=since, codes=list(codes) or None,
                       progress=not quiet and sys.stderr.isatty())
    _sync_report(summary, output_format)


@sync.command("export", epilog="""\b
Example:
  trialbridge sync export --server https://ehr.example.org/fhir/R4 --study NCT04387942 -o out/fhir""")
@_server_options
@click.option("--study", "study", required=True, help="Study id as the server's ResearchStudy.identifier has it.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Folder for the NDJSON files and their manifest (read by convert as it is).")
@click.option("--group", default=None, help="Export this Group's members (Group/<id>/$export) instead of the "
              "study's Patients listed one by one.")
@click.option("--since", default=None, help="Only resources changed since this instant (_since).")
def sync_export(server: str, token_file: Path | None, timeout: float, retries: int, output_format: str, quiet: bool,
                study: str, output: Path, group: str | None, since: str | None) -> None:
    """Bulk Data $export of the study's subjects from --server into a folder of NDJSON files."""
    from trialbridge.converters.sync.export import export

    show = (lambda p: click.echo(f"export in progress: {p}", err=True)) if not quiet and sys.stderr.isatty() else None
    with _client(server, token_file, timeout, retries) as client:
        summary = export(client, study, output, group=group, since=since, progress=show)
    _sync_report(summary, output_format)


if __name__ == "__main__":
    main()

"""Shared fixtures: the bundled samples converted once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Formats that carry a creation time (define.xml, Dataset-JSON, XPT headers) take it from
# SOURCE_DATE_EPOCH when set (converters/core/clock.py); the tests fix it, so every run in the
# suite gives the same bytes: 2026-01-01T00:00:00Z.  Tests of the real-time default unset it.
FIXED_EPOCH = "1767225600"
os.environ.setdefault("SOURCE_DATE_EPOCH", FIXED_EPOCH)

from trialbridge.converters.formats import records as records_io
from trialbridge.converters.formats import sdtm as sdtm_io
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.validation.rules import validate_datasets
from trialbridge.converters.spokes import records_to_sdtm
from trialbridge.mappings.study import load_study

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "nct04387942"
DIRTY = ROOT / "samples" / "nct04387942-dirty"
REFERENCE_ENV = "TRIALBRIDGE_REFERENCE"  # or pytest --reference DIR; default ../shared/reference
SKIP_REASON = "reference material"  # how a skip for absent reference data starts (counted at the end)


def reference_root() -> Path:
    """The public reference data the tests read (HL7 examples, the CDISC pilot …):
    ``--reference DIR``, else ``TRIALBRIDGE_REFERENCE``, else ``../shared/reference``."""
    given = os.environ.get(REFERENCE_ENV)
    return Path(given).expanduser().resolve() if given else ROOT.parent / "shared" / "reference"


REFERENCE = reference_root()


def reference(*parts: str) -> Path:
    path = reference_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{SKIP_REASON} {path} is not on this machine (give --reference DIR or {REFERENCE_ENV})")
    return path


@pytest.fixture(scope="session")
def study():
    return load_study("NCT04387942")


@pytest.fixture(scope="session")
def sample_records():
    log = IssueLog()
    records = records_io.read_records(SAMPLE, log)
    return records, log


@pytest.fixture(scope="session")
def sample_sdtm(sample_records, study):
    records, read_log = sample_records
    log = IssueLog()
    datasets = records_to_sdtm(records, study, log)
    validate_datasets(datasets, log)
    return datasets, log


@pytest.fixture(scope="session")
def sample_xpt_folder(sample_sdtm, tmp_path_factory):
    datasets, _ = sample_sdtm
    folder = tmp_path_factory.mktemp("sdtm-xpt")
    sdtm_io.write_datasets(datasets, folder, ["xpt", "dataset-json", "csv"], IssueLog(), "NCT04387942")
    return folder


# ----------------------------------------------------------------------------- the bad-input corpus
# tests/corpus/**/*.yaml: each file one case, collected as data (tests/corpus_runner.py says
# what a case holds and what every case checks besides its own expectations).


def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".yaml" and (Path(__file__).parent / "corpus") in file_path.parents:
        return CorpusFile.from_parent(parent, path=file_path)
    return None


class CorpusFile(pytest.File):
    def collect(self):
        from tests.corpus_runner import load_case

        case = load_case(self.path)
        item = CorpusCase.from_parent(self, name=self.path.stem)
        item.case_title = case["title"]
        if case.get("skip"):
            item.add_marker(pytest.mark.skip(reason=str(case["skip"])))
        yield item


class CorpusCase(pytest.Item):
    def runtest(self):
        from tests.corpus_runner import run_case

        tmp = self.config._tmp_path_factory.mktemp(self.name[:40])
        run_case(self.path, tmp)

    def repr_failure(self, excinfo):
        if excinfo.errisinstance(AssertionError):
            return f"{self.path.name}: {self.case_title}\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"corpus: {self.path.relative_to(self.path.parents[1])}"



# ----------------------------------------------------------------------------- reference data


def pytest_addoption(parser):
    parser.addoption("--reference", default=None, metavar="DIR",
                     help=f"folder of the public reference data (default: ${REFERENCE_ENV}, else ../shared/reference)")


def pytest_configure(config):
    given = config.getoption("--reference")
    if given:  # test modules read the folder at import, after this
        os.environ[REFERENCE_ENV] = str(Path(given).expanduser().resolve())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """When the reference data is absent, say how many tests did not run and why: a skip is
    not silent."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if SKIP_REASON in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) did not run: the reference data folder {reference_root()} is not on this "
            f"machine (give --reference DIR or {REFERENCE_ENV}=DIR)", yellow=True)

"""trialbridge engine: canonical records, readers and writers, validation, the runner."""

__version__ = "0.1.0"  # keep equal to [project] version in pyproject.toml (tests/test_cli.py checks)

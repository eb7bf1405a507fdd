"""A small FHIR REST client for one server: httpx for the wire, tenacity for retries.

* Retries with exponential backoff on 429 and 5xx answers and on connection failures, waiting
  what the server's ``Retry-After`` says when it says it (seconds or an HTTP date, capped);
  after the last attempt the run stops with one clear line (:class:`TrialbridgeError`).
* Timeouts on connect and read; TLS verification on (httpx's default, never turned off here);
  no redirects followed (network only to the server the user named).
* A bearer token read from a file or an environment variable — never taken from the command
  line, never logged, never part of a message.
* Transaction and batch Bundles, cut to the server's limits (:class:`Limits`).
"""
from __future__ import annotations

import email.utils
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.issues import TrialbridgeError

TOKEN_ENV = "TRIALBRIDGE_FHIR_TOKEN"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class Limits:
    """What one request may hold.  Hosted servers cap transactions: Medplum refuses a
    transaction with any conditional entry beyond 8 entries, and more than 50 writes in one."""

    transaction_writes: int = 50
    conditional_transaction: int = 8
    batch_reads: int = 100
    page_size: int = 100


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    backoff: float = 0.5  # first wait in seconds, doubled each time
    max_wait: float = 30.0  # no single wait is longer (a Retry-After of an hour is not honoured whole)


class ServerError(Exception):
    """The server answered a request with a status we do not retry (or no longer)."""

    def __init__(self, status: int, outcome: str):
        super().__init__(f"HTTP {status}: {outcome}")
        self.status = status
        self.outcome = outcome


class _Retryable(Exception):
    def __init__(self, why: str, retry_after: float | None = None):
        super().__init__(why)
        self.retry_after = retry_after


def read_token(token_file: Path | None, env: dict | None = None) -> str | None:
    """The bearer token: the file's first line when a file is named, else the environment
    variable TRIALBRIDGE_FHIR_TOKEN, else None.  The token itself never reaches a message."""
    env = os.environ if env is None else env
    if token_file is not None:
        try:
            text = Path(token_file).read_text("utf-8").strip()
        except OSError as exc:
            raise TrialbridgeError(f"{token_file}: cannot read the token file: {exc.strerror}") from None
        if not text:
            raise TrialbridgeError(f"{token_file}: the token file is empty")
        return text.splitlines()[0].strip()
    return env.get(TOKEN_ENV) or None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def outcome_text(body: Any) -> str:
    """One line from an OperationOutcome (each issue: severity, code, text, where)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return "no OperationOutcome"
    parts = []
    for issue in body.get("issue") or []:
        text = (issue.get("details") or {}).get("text") or issue.get("diagnostics") or ""
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        parts.append(f"{issue.get('severity')} {issue.get('code')}: {text}" + (f" ({where})" if where else ""))
    return "; ".join(parts) or "empty OperationOutcome"


class FhirClient:
    """Requests to one FHIR base URL."""

    def __init__(self, base: str, token: str | None = None, *, timeout: float = 60.0,
                 retry: RetryPolicy = RetryPolicy(), limits: Limits = Limits(), transport=None):
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TrialbridgeError(f"--server must be an http(s) FHIR base URL, not {base!r}")
        self.base = base.rstrip("/")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.retry = retry
        self.limits = limits
        self.requests = 0
        self.retries = 0
        headers = {"Accept": FHIR_JSON, "User-Agent": "trialbridge-sync"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), verify=True,
                                  follow_redirects=False, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "FhirClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ one request, retried
    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            if not path.startswith(self.origin + "/"):  # a link to elsewhere is not followed
                raise TrialbridgeError(f"the server sent a link to another host ({urlsplit(path).netloc}); "
                                       "not followed")
            return path
        return f"{self.base}/{path.lstrip('/')}" if path else self.base

    def send(self, method: str, path: str, body: Any = None, headers: dict | None = None,
             stream: bool = False) -> httpx.Response:
        """One request, retried on 429 / 5xx / connection failures; returns any other answer."""
        url = self.url(path)
        content = jsoncodec.dumps(body) if body is not None else None
        hdrs = dict(headers or {})
        if content is not None:
            hdrs["Content-Type"] = FHIR_JSON

        def attempt() -> httpx.Response:
            self.requests += 1
            try:
                if stream:
                    req = self._http.build_request(method, url, content=content, headers=hdrs)
                    response = self._http.send(req, stream=True)
                else:
                    response = self._http.request(method, url, content=content, headers=hdrs)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                raise _Retryable(f"{type(exc).__name__}") from None
            if response.status_code in RETRY_STATUSES:
                if stream:
                    response.close()
                raise _Retryable(f"HTTP {response.status_code}", retry_after_seconds(response.headers.get("Retry-After")))
            return response

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            self.retries += 1
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                return min(exc.retry_after, self.retry.max_wait)
            return min(self.retry.backoff * 2 ** (state.attempt_number - 1), self.retry.max_wait)

        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(self.retry.attempts), wait=wait,
                                     retry=tenacity.retry_if_exception_type(_Retryable), reraise=True)
        try:
            return retrying(attempt)
        except _Retryable as exc:
            raise TrialbridgeError(f"{self.origin}: {method} failed {self.retry.attempts} times ({exc}); "
                                   "run again to resume") from None

    def json(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> Any:
        """The answer's JSON (numbers lossless); a non-2xx answer raises :class:`ServerError`."""
        response = self.send(method, path, body, headers)
        data = _body(response)
        if response.status_code >= 300:
            raise ServerError(response.status_code, outcome_text(data))
        return data

    # ------------------------------------------------------------------ bundles
    def bundle(self, kind: str, entries: list[dict]) -> list[dict]:
        """Send a ``transaction`` or ``batch`` Bundle; the response entries, one per entry.
        A refused transaction raises :class:`ServerError` with the server's OperationOutcome."""
        answer = self.json("POST", "", {"resourceType": "Bundle", "type": kind, "entry": entries})
        got = (answer or {}).get("entry") or []
        if len(got) != len(entries):
            raise ServerError(200, f"the {kind} response holds {len(got)} entries for {len(entries)} sent")
        return got

    def read_many(self, urls: list[str]) -> list[tuple[int, Any]]:
        """GET each url (relative to the base) through batch Bundles: (status, resource)."""
        out: list[tuple[int, Any]] = []
        step = self.limits.batch_reads
        for i in range(0, len(urls), step):
            entries = [{"request": {"method": "GET", "url": u}} for u in urls[i:i + step]]
            for entry in self.bundle("batch", entries):
                out.append((_status(entry), entry.get("resource") or (entry.get("response") or {}).get("outcome")))
        return out


def _status(entry: dict) -> int:
    text = str((entry.get("response") or {}).get("status") or "0").strip()
    try:
        return int(text.split()[0])
    except ValueError:
        return 0


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return jsoncodec.loads(response.content)
    except ValueError:
        return None


def entry_status(entry: dict) -> int:
    return _status(entry)

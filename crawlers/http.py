"""One polite HTTP client for every crawler and for the fetch stage.

A ``requests.Session`` with urllib3 ``Retry`` (backoff on 429 and 5xx, honouring
``Retry-After`` up to a cap), connect and read timeouts, a descriptive
User-Agent, and a per-host rate limit shared by all threads of the process.
Secrets (API keys, tokens) registered with :func:`register_secret` are masked
in every message this module and urllib3 log, and in :class:`HttpError`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline import __version__
from pipeline.core.errors import RecordError

DEFAULT_USER_AGENT = (
    f"camsdd/{__version__} (+https://github.com/camsdd/camsdd; dataset research crawler)"
)
RETRY_STATUSES = (429, 500, 502, 503, 504)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Masks ``value`` wherever this package or urllib3 would print it."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)
        _install_log_filter()


def redact(text: str) -> str:
    """``text`` with every registered secret (and its URL-encoded form) masked."""
    for secret in list(_secrets):
        text = text.replace(secret, "***").replace(urllib.parse.quote(secret, safe=""), "***")
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = ()
        return True


_filter_installed = False


def _install_log_filter() -> None:
    # urllib3 logs retried URLs (with their query strings) at WARNING and DEBUG.
    global _filter_installed
    if _filter_installed:
        return
    for name in ("urllib3", "urllib3.connectionpool", "urllib3.util.retry", "crawlers"):
        logging.getLogger(name).addFilter(_RedactingFilter())
    _filter_installed = True


class HttpError(RecordError, RuntimeError):
    """A request that failed for good (after retries), secrets masked.

    ``reason`` is a short code: ``http_<status>``, ``timeout``,
    ``connection_error``, ``too_many_retries`` or ``bad_response``.
    """

    def __init__(self, reason: str, detail: str, status: int | None = None):
        super().__init__(reason, redact(detail))
        self.status = status


@dataclasses.dataclass
class ClientConfig:
    """How politely to talk to servers.

    Attributes:
      user_agent: sent with every request; Wikimedia asks for contact details.
      connect_timeout, read_timeout: seconds; read is between bytes, not total.
      retries: attempts after the first on 429, 5xx and connection errors.
      backoff: exponential backoff factor in seconds (0.5 → 0.5, 1, 2 …).
      max_retry_after: longest ``Retry-After`` honoured, in seconds; a server
        asking for more gets this much (then the request fails if still refused).
      min_interval: seconds between two requests to the same host (0: no limit).
      host_intervals: per-host overrides of ``min_interval``.
    """

    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.5
    max_retry_after: float = 120.0
    min_interval: float = 0.0
    host_intervals: Mapping[str, float] = dataclasses.field(default_factory=dict)


class HostRateLimiter:
    """At most one request per ``interval`` seconds per host, across threads."""

    def __init__(
        self,
        default_interval: float,
        intervals: Mapping[str, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._default = default_interval
        self._intervals = dict(intervals or {})
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep  # injectable: tests run on a fake clock

    def interval(self, host: str) -> float:
        return self._intervals.get(host, self._default)

    def wait(self, host: str) -> float:
        """Blocks until ``host`` may be called again; returns the seconds slept."""
        interval = self.interval(host)
        if interval <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return max(delay, 0.0)


def make_retry(config: ClientConfig) -> Retry:
    return Retry(
        total=config.retries,
        connect=config.retries,
        read=config.retries,
        status=config.retries,
        redirect=0,  # redirects are followed by the caller, one checked hop at a time
        backoff_factor=config.backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        retry_after_max=config.max_retry_after,
        raise_on_status=False,  # give back the last response; callers map it to a reason
        raise_on_redirect=False,
    )


class PoliteClient:
    """A session that retries, times out, rate-limits per host and masks secrets."""

    def __init__(self, config: ClientConfig | None = None, *, pool_size: int = 32):
        self.config = config or ClientConfig()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = self.config.user_agent
        adapter = HTTPAdapter(
            max_retries=make_retry(self.config), pool_connections=pool_size, pool_maxsize=pool_size
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.limiter = HostRateLimiter(self.config.min_interval, self.config.host_intervals)

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.config.connect_timeout, self.config.read_timeout)

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """GET with retries; raises :class:`HttpError` on network failure.

        A final HTTP error status is returned, not raised (see :meth:`get_json`).
        """
        host = urllib.parse.urlsplit(url).hostname or ""
        self.limiter.wait(host)
        try:
            return self.session.get(
                url,
                params=params,
                headers=headers,
                stream=stream,
                timeout=self.timeout,
                allow_redirects=allow_redirects,
            )
        except requests.exceptions.Timeout as error:
            raise HttpError("timeout", f"{_describe(url)}: {error}") from None
        except requests.exceptions.RetryError as error:
            raise HttpError("too_many_retries", f"{_describe(url)}: {error}") from None
        except requests.exceptions.ConnectionError as error:
            if "timed out" in str(error).lower():
                raise HttpError("timeout", f"{_describe(url)}: {error}") from None
            raise HttpError("connection_error", f"{_describe(url)}: {error}") from None
        except requests.exceptions.RequestException as error:
            raise HttpError("bad_request", f"{_describe(url)}: {error}") from None

    def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET a JSON API; raises :class:`HttpError` unless it answers 2xx JSON."""
        response = self.get(url, params=params, headers=headers)
        if response.status_code >= 400:
            raise HttpError(
                f"http_{response.status_code}",
                f"{_describe(url)} answered {response.status_code} {response.reason}: "
                f"{response.text[:200]!r}",
                status=response.status_code,
            )
        try:
            return response.json()
        except ValueError:
            raise HttpError(
                "bad_response",
                f"{_describe(url)} did not answer JSON: {response.text[:200]!r}",
                status=response.status_code,
            ) from None

    def close(self) -> None:
        self.session.close()


def _describe(url: str) -> str:
    """The URL without its query string (which may hold a key)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

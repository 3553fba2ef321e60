"""A facewatch daemon's /metrics page read, as ``facewatch status`` reads it: the URL it is
asked at (``HOST:PORT`` alone, a user and password as Basic authentication), the page fetched
within its time however slowly it comes (its Date header the daemon's clock), and its samples
by name and labels; an answer that is no facewatch metrics page is ``NotFacewatch``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import SplitResult, urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

from daemon.config_cameras import bare_ipv6
from daemon.peer_exchange import http_get, peer_text
from daemon.redaction import redact_url

SCRAPE_TIMEOUT_S = 5.0  # for the whole page, however slowly it comes
PAGE_LIMIT = 16_000_000  # bytes: a daemon's page is well under 1 MB
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class NotFacewatch(Exception):
    """Something answers at the URL, but not with facewatch's metrics."""


@dataclass(frozen=True)
class MetricsUrl:
    parts: SplitResult  # with the user and password, when the URL has them
    netloc: str  # HOST:PORT
    plain: str  # the URL without user and password

    def fetch(self) -> Page:
        """The page, within SCRAPE_TIMEOUT_S however slowly it comes (OSError when nothing
        answers; NotFacewatch for an answer that is no metrics page)."""
        try:
            answer = http_get(self.parts, self.netloc, SCRAPE_TIMEOUT_S, "/metrics", PAGE_LIMIT)
        except ValueError as exc:  # an answer too long
            raise NotFacewatch(str(exc)) from None
        if answer.code == 0:
            raise OSError("not a web server there")
        if 300 <= answer.code < 400:  # not followed: Basic credentials stay here
            where = redact_url(peer_text(answer.header("location") or "?"))
            raise NotFacewatch(f"it redirects to {where} (give that URL to --url)")
        if answer.code != 200:
            raise OSError(f"HTTP {answer.code} {peer_text(answer.reason)}")
        return Page(answer.body, _http_date(answer.header("date")))


@dataclass(frozen=True)
class Page:
    body: bytes
    served: float  # the serving machine's clock (its Date header) else this one's, Unix time


def _http_date(value: str | None) -> float:
    """An HTTP Date header as Unix time (1 s steps), else this machine's clock: ages are
    reckoned on the daemon's clock (another host's may be off; a camera 'down for -1 min')."""
    try:
        return parsedate_to_datetime(value or "").timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):  # none, or not a date
        return time.time()


def metrics_request(url: str) -> MetricsUrl:
    """Where to GET the metrics at ``url`` (``HOST:PORT`` alone is taken as
    ``http://HOST:PORT/metrics``); a user and password in it go as Basic authentication (a
    reverse proxy's). ValueError for a URL that is not http(s)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is no number
        ok = False
    if not ok:
        host = url.partition("://")[2 if "://" in url else 0].split("/", 1)[0].rpartition("@")[2]
        hint = (
            " (an IPv6 address in brackets: http://[::1]:9708/metrics)" if bare_ipv6(host) else ""
        )
        raise ValueError(f"--url {redact_url(url)}: expected http(s)://HOST:PORT/metrics{hint}")
    netloc = parts.netloc.rpartition("@")[2]
    plain = urlunsplit((parts.scheme, netloc, parts.path or "/metrics", parts.query, ""))
    return MetricsUrl(parts, netloc, plain)


def scrape(where: MetricsUrl) -> tuple[Samples, float]:
    """Every sample of the page, by name and labels, and the daemon's clock when it served
    it; OSError when nothing answers."""
    page = where.fetch()
    text = page.body.decode(errors="replace")
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:  # HTML, JSON...: not the Prometheus text format
        raise NotFacewatch("not a Prometheus metrics page") from exc
    samples = {  # (what the page's labels hold goes to a terminal: made printable)
        (s.name, tuple(sorted((k, peer_text(v, 300)) for k, v in s.labels.items()))): s.value
        for family in families
        for s in family.samples
        if math.isfinite(s.value)  # (NaN, +Inf: no daemon's)
    }
    return samples, page.served

"""Secrets masked wherever they show (a log line, an error, a metric label, `status`): the
password of every ``scheme://user:password@`` URL and the values of secret-looking query
parameters (``redact_url``), and every secret the configuration holds, remembered as it is
read (``remember_secret``: the cameras' and the broker's passwords, ``${credential:...}``
values; daemon/config_file.py).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# user:password@ to the last @ of the URL (a password holding / or @ written as is must not
# show in part), and the values of query parameters that carry secrets (?user=x&password=y)
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s'\"]*):[^\s'\"]*@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:password|passwd|pass|pwd|pw|psw|loginpas|passcode|token|access_token|api_key"
    r"|apikey|key|secret|auth|sig|signature)=)[^&;#\s'\"]*"
)
# The config's own passwords (camera URLs', the broker's, ${credential:...} values), masked
# wherever they show: in free text a password holding a quote or a space cannot be told from
# what follows it. Shorter ones are left to the patterns (they would mask common words).
_KNOWN_SECRETS: set[str] = set()
MIN_SECRET_CHARS = 4


def remember_secret(value: str) -> None:
    """Mask ``value`` (and its percent-decoded form) in everything ``redact_url`` shows."""
    for form in (value, unquote(value)):
        if len(form) >= MIN_SECRET_CHARS:
            _KNOWN_SECRETS.add(form)


def url_passwords(url: str) -> set[str]:
    """The password of a URL given alone, both ways it may be read: to the URL's last '@'
    (a password holding / or @ written as is), and to the first '@' before the path (an
    @ in the path or the query)."""
    found = set()
    rest = url.partition("://")[2]
    for userinfo in (rest.rpartition("@")[0], rest.split("/", 1)[0].rpartition("@")[0]):
        if ":" in userinfo:
            found.add(userinfo.partition(":")[2])
    return found - {""}


def redact_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it masked, and
    the values of secret-looking query parameters (``password=``, ``pwd=``, ``token=``...)."""
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _QUERY_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))

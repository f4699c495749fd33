"""siem-forward's logic: one compact audit record per Okta event, sent to a Splunk HTTP
Event Collector (HEC) as `POST {hec_url}/services/collector/event` with
`Authorization: Splunk <hec_token>`.

Plain Python with no import of the component bindings, so `python3 -m unittest` runs it
natively against a fake host; `app.py` binds it to the hookhost WIT imports.

The host is any object with:
  send(method, url, headers, body) -> (status, headers, body)   raises HttpFailure
  secret(name) -> str | None
  config(name) -> str | None
  log(level, message)                                            level: "debug" | "info" | "warn"
`handle` returns a one-line summary, or raises Retryable / Permanent.
"""

import json
from datetime import datetime

COLLECTOR_PATH = "/services/collector/event"


class Retryable(Exception):
    """A passing failure (throttling, an outage): hookhost retries, not before retry_after_ms."""

    def __init__(self, message, retry_after_ms=None):
        super().__init__(message)
        self.message = message
        self.retry_after_ms = retry_after_ms


class Permanent(Exception):
    """Retrying will not help (bad config, a refused token): the delivery ends dead."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class HttpFailure(Exception):
    """No response came back; `retryable` says whether trying again may help."""

    def __init__(self, message, retryable):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


# Splunk HEC status codes (the `code` of the JSON answer) that a new attempt may cure.
_HEC_BUSY = {8, 9}


def party(p):
    """A target or actor, as the compact record keeps it."""
    if p is None:
        return None
    return {k: v for k, v in (
        ("id", p.get("id")),
        ("type", p.get("type")),
        ("alternateId", p.get("alternateId")),
        ("displayName", p.get("displayName")),
    ) if v is not None}


def epoch(published):
    """RFC 3339 (Okta's `published`, e.g. 2026-11-28T10:00:00.123Z) to epoch seconds."""
    try:
        return round(datetime.fromisoformat(published.replace("Z", "+00:00")).timestamp(), 3)
    except ValueError:
        return None


def audit_record(event):
    """The compact audit record of one event: who did what to whom, when, from where."""
    raw = event.get("raw") or {}
    outcome = raw.get("outcome") or {}
    client = raw.get("client") or {}
    transaction = raw.get("transaction") or {}
    record = {
        "uuid": event["id"],
        "eventType": event["event_type"],
        "published": event["published"],
        "displayMessage": raw.get("displayMessage"),
        "severity": raw.get("severity"),
        "outcome": outcome.get("result"),
        "outcomeReason": outcome.get("reason"),
        "actor": party(event.get("actor")),
        "targets": [party(t) for t in event.get("targets", [])],
        "clientIp": client.get("ipAddress"),
        "transactionId": transaction.get("id"),
    }
    return {k: v for k, v in record.items() if v is not None}


def hec_body(event, config):
    """The HEC event envelope: {"time", "source", "sourcetype", "index"?, "event"}."""
    body = {"event": audit_record(event)}
    t = epoch(event["published"])
    if t is not None:
        body["time"] = t
    for key in ("host", "source", "sourcetype", "index"):
        value = config(key)
        if value:
            body[key] = value
    return body


def collector_url(hec_url):
    base = hec_url.rstrip("/")
    if base.endswith(COLLECTOR_PATH):
        return base
    return base + COLLECTOR_PATH


def retry_after_ms(headers):
    """`Retry-After` in seconds (an HTTP date is not worth a parser here: None)."""
    for name, value in headers:
        if name.lower() == "retry-after":
            try:
                return max(0, int(float(value.strip()) * 1000))
            except ValueError:
                return None
    return None


def hec_answer(body):
    """HEC's JSON answer {"text", "code"}, or a stand-in when it is not JSON."""
    try:
        answer = json.loads(body.decode("utf-8", "replace"))
        if isinstance(answer, dict):
            return answer.get("text") or "", answer.get("code")
    except ValueError:
        pass
    return body.decode("utf-8", "replace")[:200], None


def handle(event, host):
    """Send one event's audit record; return a summary or raise Retryable / Permanent.

    `event` is a dict: id, event_type, published, actor, targets (dicts with id, type,
    alternateId, displayName) and raw (the parsed LogEvent).
    """
    hec_url = host.config("hec_url") or ""
    if not hec_url.startswith(("https://", "http://")):
        raise Permanent(
            "config hec_url is not set (or not an http(s) URL): set [plugins.siem-forward.config] "
            "hec_url to your collector, e.g. \"https://splunk.example.com:8088\", and grant it in allowed_hosts"
        )
    token = host.secret("hec_token")
    if not token:
        raise Permanent(
            "secret hec_token is not configured: set [plugins.siem-forward.secrets] hec_token "
            "to the HEC token (Settings > Data inputs > HTTP Event Collector)"
        )
    url = collector_url(hec_url)
    body = json.dumps(hec_body(event, host.config), separators=(",", ":")).encode("utf-8")
    headers = [("authorization", "Splunk " + token), ("content-type", "application/json")]
    try:
        status, resp_headers, resp_body = host.send("POST", url, headers, body)
    except HttpFailure as e:
        if e.retryable:
            raise Retryable("HEC did not answer: " + e.message)
        raise Permanent("cannot send to HEC: " + e.message)

    text, code = hec_answer(resp_body)
    host.log("debug", "POST %s -> %d %s" % (url, status, text))
    if 200 <= status < 300 and code in (0, None):
        index = host.config("index") or "the token's default index"
        return "sent %s %s to HEC (%s)" % (event["event_type"], event["id"], index)
    detail = "HEC answered %d: %s%s" % (status, text, "" if code is None else " (code %s)" % code)
    if status == 429 or status >= 500 or code in _HEC_BUSY:
        raise Retryable(detail, retry_after_ms(resp_headers))
    if status in (401, 403):
        raise Permanent(detail + "; check secret hec_token and that the token is enabled")
    if status == 400 and code == 7:
        raise Permanent(detail + "; the token may not write to index %r: check config index" % (host.config("index") or ""))
    raise Permanent(detail)

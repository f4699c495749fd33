"""The siem-forward component: binds record.py to the hookhost WIT imports
(wit/plugin.wit) and exports handler.handle. Field-by-field copies only.

Built by `make dist` with componentize-py:
  componentize-py --wit-path ../../wit --world plugin componentize app -o siem-forward.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, http, log, secrets
from wit_world.imports.types import (
    Event,
    Failure_Permanent,
    Failure_Retryable,
    Outcome,
    RetryableFailure,
)

import record

_METHODS = {
    "GET": http.Method.GET,
    "POST": http.Method.POST,
    "PUT": http.Method.PUT,
    "PATCH": http.Method.PATCH,
    "DELETE": http.Method.DELETE,
}
_LEVELS = {"debug": log.Level.DEBUG, "info": log.Level.INFO, "warn": log.Level.WARN}
# Errors after which a new attempt may get through.
_RETRYABLE_HTTP = (http.HttpError_Timeout, http.HttpError_Connect)


class WitHost:
    def send(self, method, url, headers, body):
        request = http.Request(_METHODS[method], url, headers, body, None)
        try:
            r = http.send(request)
        except Err as e:
            err = e.value
            raise record.HttpFailure(err.value, isinstance(err, _RETRYABLE_HTTP))
        return r.status, r.headers, r.body

    def secret(self, name):
        return secrets.get(name)

    def config(self, name):
        return config.get(name)

    def log(self, level, message):
        log.log(_LEVELS.get(level, log.Level.INFO), message)


def _party(p):
    if p is None:
        return None
    return {"id": p.id, "type": p.kind, "alternateId": p.alternate_id, "displayName": p.display_name}


class Handler(exports.Handler):
    def handle(self, event: Event) -> Outcome:
        try:
            raw = json.loads(event.raw)
        except ValueError:
            raw = {}
        plain = {
            "id": event.id,
            "event_type": event.event_type,
            "published": event.published,
            "actor": _party(event.actor),
            "targets": [_party(t) for t in event.targets],
            "raw": raw if isinstance(raw, dict) else {},
        }
        try:
            return Outcome(record.handle(plain, WitHost()))
        except record.Retryable as e:
            raise Err(Failure_Retryable(RetryableFailure(e.message, e.retry_after_ms)))
        except record.Permanent as e:
            raise Err(Failure_Permanent(e.message))
        except Exception as e:  # noqa: BLE001 - anything else would trap without a message
            raise Err(Failure_Permanent("siem-forward failed unexpectedly: %r" % (e,)))

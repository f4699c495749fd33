"""siem-forward's logic against a fake host: `python3 -m unittest` in this folder."""

import json
import unittest

import record


def event(event_type="group.user_membership.add", group="O365Guest"):
    targets = [{"id": "00u1", "type": "User", "alternateId": "jane@example.net", "displayName": "Jane Doe"}]
    if group:
        targets.append({"id": "00g1", "type": "UserGroup", "alternateId": "unknown", "displayName": group})
    return {
        "id": "7f1c0e5a-0000-4000-8000-000000000001",
        "event_type": event_type,
        "published": "2026-11-28T10:00:00.500Z",
        "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin"},
        "targets": targets,
        "raw": {"displayMessage": "Add user to group membership", "severity": "INFO",
                "outcome": {"result": "SUCCESS", "reason": None},
                "client": {"ipAddress": "192.0.2.7"}, "transaction": {"id": "Xq1"}},
    }


class FakeHost:
    def __init__(self, answers, config=None, secrets=None):
        self.answers = list(answers)
        self.sent = []
        self.logs = []
        self.cfg = {"hec_url": "https://splunk.example.com:8088", "sourcetype": "okta:hookhost",
                    "source": "hookhost", "index": "okta"}
        self.cfg.update(config or {})
        self.secrets = {"hec_token": "11111111-2222-3333-4444-555555555555"} if secrets is None else secrets

    def send(self, method, url, headers, body):
        self.sent.append((method, url, dict(headers), json.loads(body)))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def secret(self, name):
        return self.secrets.get(name)

    def config(self, name):
        return self.cfg.get(name)

    def log(self, level, message):
        self.logs.append((level, message))


OK = (200, [("content-type", "application/json")], b'{"text":"Success","code":0}')


class SiemForward(unittest.TestCase):
    def test_posts_one_compact_record_in_the_hec_envelope(self):
        host = FakeHost([OK])
        summary = record.handle(event(), host)
        self.assertIn("sent group.user_membership.add", summary)
        method, url, headers, body = host.sent[0]
        self.assertEqual(method, "POST")
        self.assertEqual(url, "https://splunk.example.com:8088/services/collector/event")
        self.assertEqual(headers["authorization"], "Splunk 11111111-2222-3333-4444-555555555555")
        self.assertEqual(body["sourcetype"], "okta:hookhost")
        self.assertEqual(body["index"], "okta")
        self.assertEqual(body["time"], 1795860000.5)
        rec = body["event"]
        self.assertEqual(rec["eventType"], "group.user_membership.add")
        self.assertEqual(rec["targets"][1]["displayName"], "O365Guest")
        self.assertEqual(rec["clientIp"], "192.0.2.7")
        self.assertNotIn("outcomeReason", rec)

    def test_empty_index_is_left_to_the_token(self):
        host = FakeHost([OK], config={"index": ""})
        record.handle(event(), host)
        self.assertNotIn("index", host.sent[0][3])

    def test_throttling_and_busy_are_retryable_with_retry_after(self):
        host = FakeHost([(503, [("retry-after", "7")], b'{"text":"Server is busy","code":9}')])
        with self.assertRaises(record.Retryable) as r:
            record.handle(event(), host)
        self.assertEqual(r.exception.retry_after_ms, 7000)
        host = FakeHost([(429, [], b"")])
        with self.assertRaises(record.Retryable):
            record.handle(event(), host)
        host = FakeHost([record.HttpFailure("connection refused", True)])
        with self.assertRaises(record.Retryable):
            record.handle(event(), host)

    def test_refused_token_and_bad_index_are_permanent_and_say_what_to_fix(self):
        host = FakeHost([(403, [], b'{"text":"Invalid token","code":4}')])
        with self.assertRaises(record.Permanent) as p:
            record.handle(event(), host)
        self.assertIn("hec_token", p.exception.message)
        host = FakeHost([(400, [], b'{"text":"Incorrect index","code":7}')])
        with self.assertRaises(record.Permanent) as p:
            record.handle(event(), host)
        self.assertIn("index", p.exception.message)

    def test_missing_settings_are_permanent_and_nothing_is_sent(self):
        for host in (FakeHost([], config={"hec_url": ""}), FakeHost([], secrets={})):
            with self.assertRaises(record.Permanent):
                record.handle(event(), host)
            self.assertEqual(host.sent, [])


if __name__ == "__main__":
    unittest.main()

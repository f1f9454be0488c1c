"""Webhook signing, where webhooks may point, and the e-mail of an alert (pt-BR, escaping, zones)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from easysmart.config import SmtpSettings
from easysmart.mail import Mailer, header_safe, render_alert, render_confirmation, valid_address
from easysmart.netguard import AddressPolicy, RefusedDestinationError, classify, resolve
from easysmart.notify import backoff, delivery_id_of
from easysmart.webhooks import signature, verify


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"id":"e1"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("s3cret", body, 1700000000) == f"t=1700000000,sha256={expected}"


def test_verify_accepts_fresh_signatures_and_refuses_changed_body_or_old_time():
    header = signature("s3cret", b"body", 1000)
    assert verify("s3cret", b"body", header, now=1100)
    assert not verify("s3cret", b"body!", header, now=1100)
    assert not verify("other", b"body", header, now=1100)
    assert not verify("s3cret", b"body", header, now=1000 + 301)


@pytest.mark.parametrize(
    "address, reason",
    [
        ("10.0.0.1", "a private address"),
        ("172.20.1.1", "a private address"),
        ("192.168.1.10", "a private address"),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("169.254.169.254", "the cloud metadata address"),
        ("fd00:ec2::254", "the cloud metadata address"),
        ("169.254.10.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        ("::ffff:127.0.0.1", "an IPv4-mapped IPv6 address"),
        ("::ffff:8.8.8.8", "an IPv4-mapped IPv6 address"),
        ("fd12:3456::1", "a unique-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
    ],
)
def test_classify_names_every_kind_of_non_public_address(address, reason):
    assert classify(ipaddress.ip_address(address)) == reason


def _resolver(answers):
    return lambda host, port: answers[host]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://127.0.0.1:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00:ec2::254]/",
        "http://internal.example/",  # resolves to a private address
        "http://twofaced.example/",  # one public and one private answer
        "http://localhost/",
        "http://api.default.svc.cluster.local/",
        "ftp://example.com/",
        "http://user:pw@example.com/",
        "http:///nohost",
    ],
)
def test_resolve_refuses_non_public_and_malformed_destinations(url):
    resolver = _resolver(
        {"internal.example": ["10.1.2.3"], "twofaced.example": ["93.184.216.34", "127.0.0.1"], "localhost": ["::1"]}
    )
    with pytest.raises(RefusedDestinationError):
        resolve(url, AddressPolicy(), resolver)


def test_resolve_pins_the_checked_address_and_keeps_the_name_for_host():
    destination = resolve(
        "https://hooks.example.com:8443/a?b=1", AddressPolicy(), _resolver({"hooks.example.com": ["93.184.216.34"]})
    )
    assert (destination.address, destination.host_header, destination.target) == (
        "93.184.216.34",
        "hooks.example.com:8443",
        "/a?b=1",
    )


def test_loopback_and_listed_networks_are_allowed_only_when_configured():
    policy = AddressPolicy.from_settings(True, ("10.20.0.0/16",))
    assert resolve("http://127.0.0.1:9/", policy).address == "127.0.0.1"
    assert resolve("http://10.20.3.4/", policy).address == "10.20.3.4"
    with pytest.raises(RefusedDestinationError):
        resolve("http://10.21.0.1/", policy)
    with pytest.raises(RefusedDestinationError):
        resolve("http://[::ffff:127.0.0.1]/", policy)  # loopback allowance does not open the mapped form


def test_delivery_id_is_stable_per_alert_transition_and_channel():
    first = delivery_id_of("a", "fired", 1, "c1")
    assert first == delivery_id_of("a", "fired", 1, "c1")
    assert len({first, delivery_id_of("a", "resolved", 2, "c1"), delivery_id_of("a", "fired", 1, "c2")}) == 3


def test_backoff_doubles_up_to_its_ceiling():
    assert [backoff(n, 30, 3600).total_seconds() for n in (1, 2, 3, 8, 40)] == [30, 60, 120, 3600, 3600]


def _fired(**alert):
    base = {
        "id": "6f0e3c0a-0000-4000-8000-000000000001",
        "severity": "critical",
        "state": "firing",
        "equipment_uuid": "eq-1",
        "equipment_name": "Freezer 1",
        "sensor_name": "Temperatura",
        "unit": "°C",
        "started_at": "2026-12-01T14:00:00+00:00",
        "ended_at": None,
        "trigger_value": -14.5,
        "peak_value": -12.25,
        "late": False,
        "rule": {"above": -15.0, "below": None, "for_s": 600, "name": None},
    }
    base.update(alert)
    return {"tenant_id": "t", "timezone": "America/Sao_Paulo", "transition": "fired", "sequence": 1, "alert": base}


def test_alert_email_is_in_portuguese_with_times_in_the_tenants_zone():
    rendered = render_alert(_fired(late=True), "fired", "https://monitor.example")
    assert rendered.subject == "Alerta (crítico): Freezer 1 / Temperatura acima de -15 °C por 10 min"
    assert "Valor que disparou: -14,5 °C" in rendered.text
    assert "Início: 01/12/2026 11:00:00 (America/Sao_Paulo)" in rendered.text
    assert "Pico: -12,25 °C" in rendered.text
    assert "Recebido com atraso" in rendered.text
    assert "https://monitor.example/api/v1/alerts?equipment_uuid=eq-1" in rendered.text


def test_client_names_are_escaped_in_html_and_stripped_of_line_breaks_in_headers():
    data = _fired(equipment_name="Freezer\r\nBcc: victim@example.com", sensor_name="<script>x</script>")
    rendered = render_alert(data, "fired", "https://monitor.example")
    assert "\r" not in rendered.subject and "\n" not in rendered.subject
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    settings = SmtpSettings(smtp_host="smtp.example", smtp_from="Alerts <alerts@example.com>")
    raw = Mailer(settings).message(["ops@example.com"], rendered).as_bytes()
    parsed = message_from_bytes(raw, policy=default_policy)
    assert parsed["Bcc"] is None
    assert parsed["To"] == "ops@example.com"
    assert "Freezer Bcc: victim@example.com" in str(parsed["Subject"])


def test_header_safe_removes_every_control_character():
    assert header_safe("a\rb\nc\x00d\u2028e") == "a b c d e"


def test_confirmation_mail_carries_the_link():
    rendered = render_confirmation("https://monitor.example/api/v1/alerts/channels/confirm?token=abc")
    assert "token=abc" in rendered.text and "token=abc" in rendered.html
    assert rendered.subject.startswith("Confirme")


@pytest.mark.parametrize(
    "address, ok",
    [
        ("ops@example.com", True),
        ("a@b", False),
        ("x@y.com\r\nBcc: z@w.com", False),
        ("Name <a@b.com>", False),
        ("a@b.com, c@d.com", False),
    ],
)
def test_valid_address_takes_one_plain_address(address, ok):
    assert valid_address(address) is ok


def test_a_webhook_call_checks_the_address_again_and_never_connects_to_a_refused_one():
    from easysmart.webhooks import WebhookSender

    def resolver(host, port):
        return ["169.254.169.254"]

    outcome = WebhookSender(AddressPolicy(), resolver=resolver).post(
        "http://hooks.example.com/", "secret", b"{}", "d1", now_s=1
    )
    assert not outcome.ok and outcome.status is None and "metadata" in outcome.reason


def test_a_digest_mail_lists_each_notification_oldest_first():
    from easysmart.mail import render_digest

    items = [(_fired(equipment_name="Freezer 1"), "fired"), (_fired(equipment_name="<Câmara 2>"), "resolved")]
    rendered = render_digest(items, "https://monitor.example")
    assert rendered.subject == "Resumo: 2 notificações de alerta"
    assert rendered.text.index("Alerta (crítico): Freezer 1") < rendered.text.index("Alerta resolvido (crítico)")
    assert "&lt;Câmara 2&gt;" in rendered.html and "<Câmara 2>" not in rendered.html


def test_a_late_excursion_that_already_ended_shows_its_end_in_one_message():
    rendered = render_alert(_fired(late=True, ended_at="2026-12-01T14:30:00Z"), "fired", "https://monitor.example")
    assert "Fim: 01/12/2026 11:30:00 (America/Sao_Paulo)" in rendered.text


def test_non_ascii_client_names_are_encoded_in_the_subject_header():
    rendered = render_alert(_fired(equipment_name="Câmara fria"), "fired", "https://monitor.example")
    settings = SmtpSettings(smtp_host="smtp.example", smtp_from="Alerts <alerts@example.com>")
    raw = Mailer(settings).message(["ops@example.com"], rendered).as_bytes()
    subject_line = next(line for line in raw.split(b"\r\n") if line.startswith(b"Subject:"))
    assert b"=?utf-8?" in subject_line and "Câmara".encode() not in raw.split(b"\r\n\r\n", 1)[0]


def test_listed_webhook_urls_show_only_their_origin():
    from easysmart.notify import redacted_url

    assert redacted_url("https://hooks.slack.com/services/T0/B0/secret") == "https://hooks.slack.com/…"
    assert redacted_url("http://relay.example:8080/") == "http://relay.example:8080/"


@pytest.mark.parametrize(
    "attributes, data",
    [
        ({"type": "com.easysmart.alert.fired"}, {"transition": "resolved", "sequence": 1, "alert": {}}),
        ({"type": "com.easysmart.alert.fired"}, {"transition": "fired", "sequence": "1", "alert": {}}),
        ({"type": "com.easysmart.alert.fired"}, {"transition": "fired", "sequence": 1, "tenant_id": "x", "alert": {}}),
        ({"type": "com.easysmart.alert.fired"}, {"transition": "fired", "sequence": 1}),
    ],
)
def test_alert_events_that_break_the_contract_are_refused(attributes, data):
    from cloudevents.http import CloudEvent

    from easysmart.notify import InvalidAlertEventError, Transition

    with pytest.raises(InvalidAlertEventError):
        Transition.from_cloudevent(CloudEvent({"source": "/easysmart/alerts", **attributes}, data))

"""E-mail notifications: rendering an alert transition (text and HTML, in the tenant's language, times in the
tenant's zone) and sending it over SMTP.

Equipment and sensor names come from the client: in headers they lose control characters (no header can be
injected) and are encoded by the email package; in HTML they are escaped.
"""

from __future__ import annotations

import html
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, make_msgid, parseaddr
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from easysmart.config import SmtpSettings
from easysmart.errors import EasySmartError

DEFAULT_LANGUAGE = "pt-BR"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_MAX_NAME_CHARS = 120

_TEXTS: dict[str, dict[str, str]] = {
    "pt-BR": {
        "fired": "Alerta",
        "acknowledged": "Alerta reconhecido",
        "resolved": "Alerta resolvido",
        "reminder": "Lembrete: alerta crítico não reconhecido",
        "test": "Notificação de teste",
        "digest": "Resumo: {count} notificações de alerta",
        "digest_intro": (
            "Muitas notificações em pouco tempo neste canal; aqui estão juntas, da mais antiga à mais nova:"
        ),
        "critical": "crítico",
        "warning": "aviso",
        "equipment": "Equipamento",
        "sensor": "Sensor",
        "rule": "Regra",
        "trigger_value": "Valor que disparou",
        "peak_value": "Pico",
        "started_at": "Início",
        "ended_at": "Fim",
        "acknowledged_by": "Reconhecido em",
        "ack_comment": "Comentário",
        "late": "Recebido com atraso: aconteceu enquanto a loja estava sem conexão.",
        "above": "acima de",
        "below": "abaixo de",
        "for": "por",
        "open": "Ver alertas",
        "test_body": "Este canal de notificação do Easy Smart Monitor funciona.",
        "confirm_subject": "Confirme o recebimento de alertas do Easy Smart Monitor",
        "confirm_body": "Este endereço foi indicado para receber alertas do Easy Smart Monitor. Para confirmar, abra:",
        "confirm_ignore": "Se você não esperava esta mensagem, ignore-a: nada mais será enviado.",
        "time_format": "%d/%m/%Y %H:%M:%S",
        "decimal": ",",
    },
    "en": {
        "fired": "Alert",
        "acknowledged": "Alert acknowledged",
        "resolved": "Alert resolved",
        "reminder": "Reminder: critical alert not acknowledged",
        "test": "Test notification",
        "digest": "Digest: {count} alert notifications",
        "digest_intro": "Many notifications in a short time on this channel; here they are together, oldest first:",
        "critical": "critical",
        "warning": "warning",
        "equipment": "Equipment",
        "sensor": "Sensor",
        "rule": "Rule",
        "trigger_value": "Value that crossed",
        "peak_value": "Peak",
        "started_at": "Started",
        "ended_at": "Ended",
        "acknowledged_by": "Acknowledged at",
        "ack_comment": "Comment",
        "late": "Learnt late: it happened while the store was offline.",
        "above": "above",
        "below": "below",
        "for": "for",
        "open": "See the alerts",
        "test_body": "This Easy Smart Monitor notification channel works.",
        "confirm_subject": "Confirm that you want Easy Smart Monitor alerts",
        "confirm_body": "This address was given to receive Easy Smart Monitor alerts. To confirm, open:",
        "confirm_ignore": "If you did not expect this message, ignore it: nothing else will be sent.",
        "time_format": "%Y-%m-%d %H:%M:%S",
        "decimal": ".",
    },
}


class MailError(EasySmartError):
    """The SMTP server could not be reached or refused the message."""

    status, code = 502, "mail_failed"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def header_safe(name: object) -> str:
    """A client-given name fit for a header: no control characters (CR/LF would start a header of its own)."""
    return _CONTROL.sub(" ", str(name or "")).strip()[:_MAX_NAME_CHARS]


def texts_for(language: str | None) -> dict[str, str]:
    return _TEXTS.get(language or DEFAULT_LANGUAGE, _TEXTS[DEFAULT_LANGUAGE])


def local_time(value: str | None, zone_name: str | None, time_format: str) -> str | None:
    """An ISO-8601 time in the tenant's zone, e.g. '01/12/2026 11:03:00 (America/Sao_Paulo)'."""
    if not value:
        return None
    try:
        zone = ZoneInfo(zone_name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone, zone_name = ZoneInfo("UTC"), "UTC"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value[:64]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return f"{moment.astimezone(zone).strftime(time_format)} ({zone_name or 'UTC'})"


def _number(value: object, unit: object, decimal: str) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    suffix = f" {header_safe(unit)}" if unit else ""
    return f"{value:g}".replace(".", decimal) + suffix


def alert_link(base_url: str, alert: dict) -> str:
    query = urlencode({"equipment_uuid": str(alert.get("equipment_uuid") or "")})
    return f"{base_url.rstrip('/')}/api/v1/alerts?{query}"


def render_alert(data: dict, kind: str, base_url: str, language: str | None = None) -> Rendered:
    """The message of one transition (`kind`: fired, acknowledged, resolved, reminder or test)."""
    words = texts_for(language)
    alert = data.get("alert") or {}
    rule = alert.get("rule") or {}
    zone = data.get("timezone")
    equipment = header_safe(alert.get("equipment_name") or alert.get("equipment_uuid"))
    sensor = header_safe(alert.get("sensor_name") or alert.get("sensor_uuid"))
    unit = alert.get("unit")
    severity = words.get(str(alert.get("severity")), header_safe(alert.get("severity")))
    condition = ""
    for bound in ("above", "below"):
        limit = _number(rule.get(bound), unit, words["decimal"])
        if limit is not None:
            condition = f"{words[bound]} {limit}"
    if condition and isinstance(rule.get("for_s"), int) and rule["for_s"] > 0:
        condition += f" {words['for']} {_duration(rule['for_s'])}"
    headline = f"{words[kind]} ({severity}): {equipment}" + (f" / {sensor}" if sensor else "")
    subject = header_safe(headline + (f" {condition}" if condition and kind != "test" else ""))
    rows: list[tuple[str, str]] = [(words["equipment"], equipment)]
    if sensor:
        rows.append((words["sensor"], sensor))
    if rule.get("name") or condition:
        rows.append((words["rule"], " ".join(part for part in (header_safe(rule.get("name")), condition) if part)))
    for field in ("trigger_value", "peak_value"):
        shown = _number(alert.get(field), unit, words["decimal"])
        if shown is not None:
            rows.append((words[field], shown))
    for field in ("started_at", "ended_at", "acknowledged_at"):
        shown = local_time(alert.get(field), zone, words["time_format"])
        if shown is not None:
            rows.append((words["acknowledged_by" if field == "acknowledged_at" else field], shown))
    if alert.get("ack_comment"):
        rows.append((words["ack_comment"], str(alert["ack_comment"])[:2000]))
    link = alert_link(base_url, alert)
    notes = [words["late"]] if alert.get("late") else []
    if kind == "test":
        rows, notes = [], [words["test_body"]]
    text = "\n".join(
        [headline, "", *(f"{label}: {value}" for label, value in rows), *notes, "", f"{words['open']}: {link}"]
    )
    escape = html.escape
    table = "".join(f"<tr><th align='left'>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in rows)
    body = (
        f"<html><body><h2>{escape(headline)}</h2><table>{table}</table>"
        + "".join(f"<p>{escape(note)}</p>" for note in notes)
        + f'<p><a href="{escape(link)}">{escape(words["open"])}</a></p></body></html>'
    )
    return Rendered(subject, text + "\n", body)


def render_digest(items: list[tuple[dict, str]], base_url: str, language: str | None = None) -> Rendered:
    """One message for a storm: each (event data, kind) as its one-line headline, oldest first."""
    words = texts_for(language)
    subject = words["digest"].format(count=len(items))
    lines = [render_alert(data, kind, base_url, language).subject for data, kind in items]
    link = f"{base_url.rstrip('/')}/api/v1/alerts"
    text = "\n".join(
        [subject, "", words["digest_intro"], *(f"- {line}" for line in lines), "", f"{words['open']}: {link}"]
    )
    escape = html.escape
    body = (
        f"<html><body><h2>{escape(subject)}</h2><p>{escape(words['digest_intro'])}</p><ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in lines)
        + f'</ul><p><a href="{escape(link)}">{escape(words["open"])}</a></p></body></html>'
    )
    return Rendered(subject, text + "\n", body)


def render_confirmation(confirm_url: str, language: str | None = None) -> Rendered:
    words = texts_for(language)
    text = f"{words['confirm_body']}\n\n{confirm_url}\n\n{words['confirm_ignore']}\n"
    body = (
        f"<html><body><p>{html.escape(words['confirm_body'])}</p>"
        f'<p><a href="{html.escape(confirm_url)}">{html.escape(confirm_url)}</a></p>'
        f"<p>{html.escape(words['confirm_ignore'])}</p></body></html>"
    )
    return Rendered(words["confirm_subject"], text, body)


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def valid_address(address: str) -> bool:
    """One plain address (local@domain), no display name, no control characters."""
    name, parsed = parseaddr(address)
    return (
        not name
        and parsed == address
        and len(address) <= 254
        and not _CONTROL.search(address)
        and re.fullmatch(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+", address) is not None
    )


class Mailer:
    """Sends messages through the configured SMTP server (STARTTLS, implicit TLS or plain, with credentials)."""

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.tls_context = tls_context or ssl.create_default_context()

    @property
    def configured(self) -> bool:
        return bool(self.settings.smtp_host)

    def message(self, recipients: list[str], rendered: Rendered, message_id_key: str | None = None) -> EmailMessage:
        message = EmailMessage(policy=SMTP_POLICY)
        name, address = parseaddr(self.settings.smtp_from)
        message["From"] = formataddr((name, address))
        message["To"] = ", ".join(recipients)
        message["Subject"] = header_safe(rendered.subject)
        domain = address.rpartition("@")[2] or "easysmart.local"
        message["Message-ID"] = f"<{message_id_key}@{domain}>" if message_id_key else make_msgid(domain=domain)
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        return message

    def send(self, recipients: list[str], rendered: Rendered, message_id_key: str | None = None) -> None:
        if not self.configured:
            raise MailError("no SMTP server is configured (SMTP_HOST)")
        settings = self.settings
        message = self.message(recipients, rendered, message_id_key)
        try:
            if settings.smtp_security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s, context=self.tls_context
                )
            else:
                client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s)
            with client:
                if settings.smtp_security == "starttls":
                    client.starttls(context=self.tls_context)
                if settings.smtp_username:
                    client.login(settings.smtp_username, settings.smtp_password)
                client.send_message(message, to_addrs=recipients)
        except smtplib.SMTPResponseException as error:
            raise MailError(f"the SMTP server answered {error.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as error:
            raise MailError(f"the SMTP server could not be reached: {type(error).__name__}") from None

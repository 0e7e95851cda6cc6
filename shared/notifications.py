"""Customer notifications: the port, the SNS (SMS) + SES (email) adapter, and
the message templates (``shared/templates``, ``string.Template`` syntax)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from mypy_boto3_ses import SESClient
    from mypy_boto3_sns import SNSClient

TEMPLATES = Path(__file__).with_name("templates")


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    sms: str
    email_subject: str
    email_body: str


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / f"{name}.txt").read_text(encoding="utf-8").strip())


def render(template_prefix: str, values: dict[str, str]) -> Message:
    """The SMS and the email of one template family, e.g. ``activation``.
    A missing value is a bug, not something to send half-filled: substitute()."""
    return Message(
        sms=_template(f"{template_prefix}_sms").substitute(values),
        email_subject=_template(f"{template_prefix}_email_subject").substitute(values),
        email_body=_template(f"{template_prefix}_email").substitute(values),
    )


class Notifier(Protocol):
    def send_sms(self, e164_number: str, text: str) -> str:
        """The provider's message id."""
        ...

    def send_email(self, to: str, subject: str, body: str) -> str: ...


class AwsNotifier:
    """SMS through SNS (publish to the E.164 number, transactional), email through SES."""

    def __init__(self, sns: SNSClient, ses: SESClient, sender: str) -> None:
        self._sns = sns
        self._ses = ses
        self._sender = sender

    def send_sms(self, e164_number: str, text: str) -> str:
        response = self._sns.publish(
            PhoneNumber=e164_number,
            Message=text,
            MessageAttributes={
                "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
            },
        )
        return response["MessageId"]

    def send_email(self, to: str, subject: str, body: str) -> str:
        response = self._ses.send_email(
            Source=self._sender,
            Destination={"ToAddresses": [to]},
            Message={"Subject": {"Data": subject}, "Body": {"Text": {"Data": body}}},
        )
        return response["MessageId"]

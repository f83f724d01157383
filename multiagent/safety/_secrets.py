"""Finders for secrets: tokens of known shapes, key-value assignments and private key blocks.

The token shapes come from detect-secrets' plugins (Yelp's maintained set: GitHub, GitLab,
Stripe, AWS, Slack, OpenAI, JWT, npm, PyPI, SendGrid, Twilio, Telegram, Discord, Mailchimp,
Square, Artifactory, Azure storage, basic-auth URLs); their patterns are used as candidates and
every hit is widened to the whole token, so a key longer than the plugin's fixed length is not
left with a raw tail. A few shapes newer than detect-secrets 1.5 are added here (``github_pat_``,
project-scoped OpenAI keys, Anthropic keys, Google API keys, bearer tokens), and so are
``key: value`` pairs in English, German and Indonesian (``password:``, ``Passwort:``,
``kata sandi:``, ``aws_secret_access_key =``), whose value is redacted and key kept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

Span = tuple[int, int]

_EXTRA_TOKENS = (
    re.compile(r"github_pat_[A-Za-z0-9_]{22,}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9_]{30,}"),
    re.compile(r"sk-(?:proj|ant|svcacct|admin)-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"\bsk-[A-Za-z0-9]{32,}"),
    re.compile(r"\b[sr]k_(?:live|test)_[0-9A-Za-z]{16,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\b[Bb]earer\s+[A-Za-z0-9._~+/\-]{20,}=*"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
)
_TOKEN_CHAR = re.compile(r"[A-Za-z0-9_\-+/=.]")
_KEYS = (
    r"password|passwd|pwd|passphrase|passwort|kennwort|kata\s+sandi|sandi|"
    r"pin|api[_\-\s]?key|apikey|secret(?:[_\-]?key)?|client[_\-]?secret|"
    r"access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|token|"
    r"aws_secret_access_key|aws_session_token|private[_\-]?key|geheimnis|kunci\s+api"
)
# ``password: value``; the value is one token, quoted or not, of at least 4 characters; the
# key may end a longer name (``DB_PASSWORD=``, ``OPENAI_API_KEY=``), as in environment files
_ASSIGNED = re.compile(
    rf"(?i)(?<![A-Za-z0-9])(?:{_KEYS})[\"']?\s*(?::|=|=>|:=)\s*([\"']?)(?P<value>[^\s\"',;]{{4,}})\1"
)
# ``my password is value`` only when the value does not read as a word (has a digit or symbol)
_SAID = re.compile(
    rf"(?i)(?<![\w])(?:{_KEYS})\s+(?:is|ist|lautet|adalah|yaitu|=)\s+([\"']?)"
    r"(?P<value>(?=\S*[\d!@#$%^&*?_~])(?!\S*[:=](?:\s|$))[^\s\"',;]{6,})\1"
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=:\s\-,]*)",
    re.DOTALL,
)
_PLACEHOLDER = re.compile(r"^(?:\[REDACTED_[A-Z_]+\]|<[A-Z_]+_\d+>)")


@functools.cache
def _plugin_patterns() -> tuple[re.Pattern[str], ...]:
    """The candidate patterns of detect-secrets' token plugins, imported on first use."""
    from detect_secrets.plugins.artifactory import ArtifactoryDetector
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
    from detect_secrets.plugins.basic_auth import BasicAuthDetector
    from detect_secrets.plugins.discord import DiscordBotTokenDetector
    from detect_secrets.plugins.github_token import GitHubTokenDetector
    from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
    from detect_secrets.plugins.jwt import JwtTokenDetector
    from detect_secrets.plugins.mailchimp import MailchimpDetector
    from detect_secrets.plugins.npm import NpmDetector
    from detect_secrets.plugins.openai import OpenAIDetector
    from detect_secrets.plugins.pypi_token import PypiTokenDetector
    from detect_secrets.plugins.sendgrid import SendGridDetector
    from detect_secrets.plugins.slack import SlackDetector
    from detect_secrets.plugins.square_oauth import SquareOAuthDetector
    from detect_secrets.plugins.stripe import StripeDetector
    from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
    from detect_secrets.plugins.twilio import TwilioKeyDetector

    plugins = (
        ArtifactoryDetector, AWSKeyDetector, AzureStorageKeyDetector, BasicAuthDetector,
        DiscordBotTokenDetector, GitHubTokenDetector, GitLabTokenDetector, JwtTokenDetector,
        MailchimpDetector, NpmDetector, OpenAIDetector, PypiTokenDetector, SendGridDetector,
        SlackDetector, SquareOAuthDetector, StripeDetector, TelegramBotTokenDetector,
        TwilioKeyDetector,
    )  # fmt: skip
    return tuple(p for plugin in plugins for p in plugin.denylist)


@functools.cache
def _captured_patterns() -> frozenset[re.Pattern[str]]:
    """Plugin patterns whose group 1 is the secret and the rest its context (a URL, a name)."""
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.basic_auth import BasicAuthDetector

    return frozenset((*BasicAuthDetector.denylist, *AWSKeyDetector.denylist[1:]))


def _jwt_ok(token: str) -> bool:
    from detect_secrets.plugins.jwt import JwtTokenDetector

    return bool(JwtTokenDetector.is_formally_valid(token))


def _widen(text: str, start: int, end: int) -> Span:
    """The whole token around ``text[start:end]``, so no raw tail or head is left."""
    while start > 0 and _TOKEN_CHAR.match(text[start - 1]):
        start -= 1
    while end < len(text) and _TOKEN_CHAR.match(text[end]):
        end += 1
    while end > start and text[end - 1] in ".-/+":
        end -= 1  # a sentence's full stop is not part of the token
    return start, end


def find_secrets(text: str) -> Iterator[Span]:
    """Secrets: known token shapes (widened to the token), assigned values, private keys."""
    for match in _PRIVATE_KEY.finditer(text):
        yield match.span()
    for pattern in (*_plugin_patterns(), *_EXTRA_TOKENS):
        for match in pattern.finditer(text):
            if pattern in _captured_patterns():
                yield match.span(1)  # a password inside a URL, a key inside quotes: exact
                continue
            raw = match.group(0)
            if raw.startswith("eyJ") and not _jwt_ok(raw):
                continue
            yield _widen(text, *match.span())
    for pattern in (_ASSIGNED, _SAID):
        for match in pattern.finditer(text):
            if not _PLACEHOLDER.match(match.group("value")):
                yield match.span("value")

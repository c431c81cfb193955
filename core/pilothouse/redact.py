"""Cut secrets out of text before a person sees it (the monitor, the portal).

The event log keeps what happened; the views show it through a :class:`Redactor`
so an API key that ended up in a prompt, a tool result or an error message never
reaches a screen or a published page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from .settings import Settings, is_secret_name

#: tokens that look like credentials, whatever configuration says
SECRET_PATTERNS: tuple[str, ...] = (
    r"\bsk-[A-Za-z0-9_-]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bxox[abpr]-[A-Za-z0-9-]{10,}",
    r"\b(?i:bearer)\s+[A-Za-z0-9._~+/=-]{12,}",
)
#: shorter values of secret-named environment variables are not taken for secrets
#: (a local server's placeholder key "x", a flag "true")
ENV_SECRET_MIN = 8
EMAIL_PATTERN = r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"
MASK = "[redacted]"


class Redactor:
    """Replaces known secret values and secret-looking patterns with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        # Longest first, so a key that contains another is cut whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self.pattern = re.compile("|".join(f"(?:{p})" for p in (*SECRET_PATTERNS, *patterns)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """Redact the configured endpoints' secrets (keys, passwords and keys in their
        URLs, secret header values), secret environment variables (``*_API_KEY``,
        ``*_TOKEN``...), ``redact_patterns`` and, when ``redact_emails`` is set, e-mail
        addresses."""
        secrets = [s for endpoint in settings.endpoints.values() for s in endpoint.secrets()]
        # and, as a net under every provider's own conventions (OPENAI_API_KEY...), the
        # value of each environment variable whose name says it holds a secret
        secrets += [
            value for name, value in os.environ.items()
            if is_secret_name(name) and len(value) >= ENV_SECRET_MIN
        ]  # fmt: skip
        patterns = list(settings.redact_patterns)
        if settings.redact_emails:
            patterns.append(EMAIL_PATTERN)
        return cls(secrets, patterns)

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return self.pattern.sub(MASK, text)

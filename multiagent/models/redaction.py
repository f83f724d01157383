"""PII redaction for prompts: kept here for the callers of ``multiagent.models.redaction``.

The detection and redaction live in :mod:`multiagent.safety`; see
:mod:`multiagent.safety.detect` for what is recognised and how.
"""

from __future__ import annotations

from multiagent.safety.redaction import Redaction, redact_messages, redact_text, redact_value

__all__ = ["Redaction", "redact_messages", "redact_text", "redact_value"]

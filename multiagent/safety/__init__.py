"""Personal data and secrets: finding them (:mod:`.detect`) and replacing them (:mod:`.redaction`).

This package sits just above the metrics API and below everything else: models, nodes, graphs
and the queue worker call it at the points where input enters and where prompts leave.
"""

from multiagent.safety.detect import KINDS, Finding, find_pii
from multiagent.safety.ids import check_id_private, find_pii_in_id
from multiagent.safety.redaction import (
    Pseudonymizer,
    Redaction,
    redact_input,
    redact_messages,
    redact_text,
    redact_value,
)

__all__ = [
    "KINDS",
    "Finding",
    "Pseudonymizer",
    "Redaction",
    "check_id_private",
    "find_pii",
    "find_pii_in_id",
    "redact_input",
    "redact_messages",
    "redact_text",
    "redact_value",
]

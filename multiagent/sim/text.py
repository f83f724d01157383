"""Deterministic text for the simulated provider, shared by the in-process model and the server.

The same (model, messages, seed) always gives the same reply; the reply is shaped by the role the
system prompt describes and names the task it was given, so the outputs of different agents and
tasks differ the way real ones would. Tokens are whitespace-preserving word pieces: joining the
pieces of a reply gives the reply back exactly, which is what streaming relies on.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from typing import Any

_TOKEN = re.compile(r"\s*\S+|\s+")
_LABEL = re.compile(r"^(task|topic|text|question)\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]{3,}")
_STOPWORDS = frozenset(
    [
        "about",
        "above",
        "after",
        "again",
        "against",
        "also",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "could",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "from",
        "further",
        "have",
        "having",
        "here",
        "into",
        "just",
        "more",
        "most",
        "other",
        "over",
        "same",
        "should",
        "some",
        "such",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "under",
        "until",
        "very",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "would",
        "your",
        "you",
        "please",
        "given",
        "task",
        "small",
        "large",
        "good",
        "best",
        "make",
        "plan",
        "assess",
        "write",
        "explain",
        "describe",
        "discuss",
        "review",
        "consider",
        "decide",
        "whether",
        "many",
        "much",
    ]
)

_ROLE_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("summary", ("summar", "minutes")),
    ("synthesizer", ("synthes", "combine", "collaborative output")),
    ("planner", ("planner", "plan the", "split the task")),
    ("moderator", ("moderat", "consensus")),
    ("validator", ("validat", "verdict", "review the text")),
    ("critic", ("critic", "risk", "weakness")),
    ("analyst", ("analy", "trade-off")),
    ("researcher", ("research", "facts", "sources")),
    ("writer", ("writ", "draft", "editor")),
)

_OPENERS: dict[str, tuple[str, ...]] = {
    "researcher": ("Research notes on {topic}.", "What the evidence says about {topic}."),
    "analyst": ("Analysis of {topic}.", "Breaking down {topic} into its drivers."),
    "critic": ("Critique of the current thinking on {topic}.", "Risks and gaps around {topic}."),
    "writer": ("Draft on {topic}.", "A readable account of {topic}."),
    "moderator": ("Moderator's note on {topic}.", "Where the discussion of {topic} stands."),
    "validator": ("Review of the text on {topic}.", "Checking the claims about {topic}."),
    "planner": ("Plan for {topic}.", "How to split the work on {topic}."),
    "synthesizer": ("Collaborative output on {topic}.", "Combined answer on {topic}."),
    "summary": ("Meeting summary: {topic}.", "Minutes of the meeting on {topic}."),
    "assistant": ("On {topic}.", "Regarding {topic}."),
}

_BODY: dict[str, tuple[str, ...]] = {
    "researcher": (
        "Three independent sources agree that {k0} depends on {k1}.",
        "Published measurements of {k0} vary by a factor of two across settings.",
        "The strongest evidence concerns {k1}; evidence on {k2} is thinner.",
        "Earlier work treated {k2} as fixed, which recent data contradicts.",
    ),
    "analyst": (
        "The main trade-off is between {k0} and {k1}.",
        "If {k1} grows, {k0} follows with a delay of one cycle.",
        "A simple model explains most of the variance through {k2}.",
        "Costs concentrate in {k0}; benefits accrue mostly to {k1}.",
    ),
    "critic": (
        "The argument assumes {k0} is stable, which is not shown.",
        "A failure in {k1} would go unnoticed under the current plan.",
        "The estimate for {k2} is optimistic and lacks a baseline.",
        "Nobody has tested what happens to {k0} under load.",
    ),
    "writer": (
        "In short, {k0} matters because it shapes {k1}.",
        "Readers should come away knowing how {k2} fits in.",
        "The story starts with {k0} and ends with a clear recommendation.",
        "Plain language keeps {k1} accessible to non-specialists.",
    ),
    "moderator": (
        "Participants agree on {k0} but still differ on {k1}.",
        "The open question is whether {k2} should come first.",
        "Consensus is close; one more round should settle {k1}.",
    ),
    "validator": (
        "The claims about {k0} are consistent with each other.",
        "The text supports its statement on {k1} with a reason.",
        "The part on {k2} could use a source.",
    ),
    "planner": (
        "First, gather facts on {k0}.",
        "Second, analyse how {k1} affects the outcome.",
        "Third, review risks around {k2}.",
        "Finally, write up a recommendation.",
    ),
    "synthesizer": (
        "The team agrees that {k0} is the central issue.",
        "Research and analysis both point to {k1} as the lever.",
        "The critique about {k2} is addressed by adding a check.",
        "Recommendation: act on {k0} now and revisit {k1} next quarter.",
    ),
    "summary": (
        "Decisions: prioritise {k0}; defer {k2}.",
        "Action items: measure {k1}; draft a proposal on {k0}.",
        "Dissent: one participant doubts the estimate for {k2}.",
        "Next meeting reviews progress on {k1}.",
    ),
    "assistant": (
        "The key factor is {k0}.",
        "It interacts with {k1} in ways worth measuring.",
        "A careful look at {k2} completes the picture.",
    ),
}


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into streaming pieces whose concatenation is exactly ``text``."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """Approximate a tokenizer: one token per word piece, at least one per four characters."""
    return max(len(split_tokens(text)), (len(text) + 3) // 4)


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that counts at most ``limit`` tokens: whole pieces, or
    the start of the first piece when that alone counts more."""
    kept: list[str] = []
    chars = 0
    for piece in split_tokens(text):
        chars += len(piece)
        # count_tokens of the prefix, kept as running sums (linear, not quadratic)
        if max(len(kept) + 1, (chars + 3) // 4) > limit:
            if not kept:  # a first piece longer than the limit is cut, as a tokenizer cuts a word
                kept.append(piece[: 4 * limit])
            break
        kept.append(piece)
    return "".join(kept)


def digest(*parts: Any) -> str:
    """A stable hex digest of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def detect_role(system: str) -> str:
    """Name the role a system prompt describes, ``assistant`` when none is recognised."""
    lowered = system.lower()
    for role, needles in _ROLE_KEYWORDS:
        if any(needle in lowered for needle in needles):
            return role
    return "assistant"


def _topic(task: str) -> tuple[str, list[str]]:
    task = _LABEL.sub("", task.strip())
    first, _, rest = task.partition("\n")
    first = re.split(r"(?<=[.!?])\s", first.strip(), maxsplit=1)[0].strip().rstrip(".!?")
    words = first.split()
    topic = " ".join(words[:12]) + ("…" if len(words) > 12 else "")
    if len(topic) > 1 and topic[0].isupper() and topic[1].islower():
        topic = topic[0].lower() + topic[1:]
    # the first line is the task itself; what follows (transcripts, contributions) only fills in
    keywords: list[str] = []
    in_task = 0
    for text in (first, rest):
        found: list[str] = []
        for word in _WORD.findall(text):
            lowered = word.lower()
            if lowered not in _STOPWORDS and lowered not in keywords and lowered not in found:
                found.append(lowered)
        keywords.extend(sorted(found, key=len, reverse=True))
        in_task = in_task or len(keywords)
    while len(keywords) < 3:
        keywords.append(("the goal", "the constraints", "the timeline")[len(keywords)])
    # draw from the task's own words when it has enough of them
    return topic or "the task", keywords[: max(3, min(in_task, 6))]


def simulate_reply(
    model: str,
    messages: Sequence[tuple[str, str]],
    *,
    seed: int = 0,
    max_tokens: int | None = None,
) -> str:
    """Return the simulated reply to ``messages`` (pairs of role and text).

    Args:
        model: Model name; part of the determinism key.
        messages: ``(role, content)`` pairs, roles as in OpenAI's API.
        seed: Changes the reply while keeping it deterministic.
        max_tokens: Cut the reply to at most this many tokens.
    """
    system = " ".join(content for role, content in messages if role in ("system", "developer"))
    users = [content for role, content in messages if role == "user"]
    task = users[-1] if users else (messages[-1][1] if messages else "")
    role = detect_role(system)
    rng = random.Random(digest(model, list(messages), seed))
    topic, keywords = _topic(task)
    picked = rng.sample(keywords, 3)
    fields = {"topic": topic, "k0": picked[0], "k1": picked[1], "k2": picked[2]}
    body = list(_BODY[role])
    rng.shuffle(body)
    count = rng.randint(max(2, len(body) - 2), len(body))
    if role in ("planner", "summary"):
        body = list(_BODY[role])[:count]  # these read in order
    sentences = [rng.choice(_OPENERS[role]), *body[:count]]
    text = " ".join(sentence.format(**fields) for sentence in sentences)
    if max_tokens is not None:
        text = truncate_to_tokens(text, max(1, max_tokens))
    return text

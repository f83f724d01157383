"""What a batch keeps of one item, and which of its validators a resume asks again.

A finished item's record is its consensus and the verdicts it rests on; one whose validators
failed after retries is *incomplete*, and a resume asks only those validators again
(:meth:`ItemRecord.failed_validators`, the single run's rule).

The items the verdicts of a chunk that stopped finish are stored as finished; an item some of
whose validators answered and the others were not asked yet is stored as a *partial* record
(still unfinished): its verdicts, and the validators not asked (:attr:`ItemRecord.unasked`). A
resume completes a partial record as it completes an incomplete one: the validators not asked
count as failed (:data:`NOT_ASKED`), so
:func:`~multiagent.nodes.validator.retry_failed_validators` asks them, and only them; no verdict
is bought twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from multiagent.nodes.state import (
    ItemResult,
    ValidationItem,
    ValidatorFailure,
    ValidatorTask,
    Verdict,
)
from multiagent.nodes.validator import failed_validators, text_key

#: The error a validator not asked yet counts as failing with, while a partial record is
#: completed: what makes :func:`~multiagent.nodes.validator.retry_failed_validators` ask it.
NOT_ASKED = "not asked yet: the batch stopped before this validator's call"


@dataclass(frozen=True)
class ItemRecord:
    """What is kept of one item: its consensus and the verdicts it rests on.

    A *partial* record (``unasked`` not empty) is an unfinished item's verdicts, kept because
    they were paid for: its ``result`` is the consensus of those verdicts only, and no result
    of the batch until a resume asks the validators in ``unasked``.
    """

    result: ItemResult
    verdicts: list[Verdict]
    failures: list[ValidatorFailure]
    unasked: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """Whether validators of the item were not asked yet (the item is unfinished)."""
        return bool(self.unasked)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the stores keep; ``unasked`` only in a partial record)."""
        data: dict[str, Any] = {
            "result": self.result,
            "verdicts": self.verdicts,
            "failures": self.failures,
        }
        if self.unasked:
            data["unasked"] = self.unasked
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemRecord:
        """Read back :meth:`as_dict`."""
        return cls(
            result=data["result"], verdicts=list(data["verdicts"]),
            failures=list(data["failures"]), unasked=list(data.get("unasked", [])),
        )  # fmt: skip

    def to_retry(self, key: str) -> list[ValidatorFailure]:
        """The record's failures, and a failure (:data:`NOT_ASKED`) for each validator not
        asked yet: what a completion's state holds, so that the validators to ask are chosen
        by one rule."""
        missing = [
            ValidatorFailure(key=key, validator=name, error=NOT_ASKED) for name in self.unasked
        ]
        return [*self.failures, *missing]

    def failed_validators(self, item: ValidationItem) -> list[ValidatorTask]:
        """The validators of ``item`` that failed after retries and gave no verdict since, or
        were not asked yet: what a resume asks (the single run's rule, :func:`~multiagent.
        nodes.validator.failed_validators`); none for an item fully decided."""
        failures = self.to_retry(text_key(item["text"]))
        return failed_validators({"items": [item], "verdicts": self.verdicts, "failures": failures})


def asked_again(
    items: Sequence[ValidationItem], records: Mapping[str, ItemRecord]
) -> dict[str, list[str]]:
    """The validators a completion of ``items`` asks again (those that failed), by text key;
    items without a record in ``records`` are left out."""
    asked: dict[str, list[str]] = {}
    for item in items:
        record = records.get(item["id"])
        if record is not None:
            tasks = record.failed_validators(item)
            asked[text_key(item["text"])] = [task["validator"] for task in tasks]
    return asked

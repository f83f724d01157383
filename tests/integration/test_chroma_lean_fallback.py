"""When the lean Chroma import fails, Chroma is imported plainly and still opens."""

from __future__ import annotations

from pathlib import Path

from tests.integration._chroma_probe import run_chroma_probe

# a new process (the test process may have imported Chroma already): the stand-in exporter
# module lacks the name chromadb imports from it, as a later chromadb importing another name
# from that module would find
_PROBE = """
import json, logging, sys, types
import overrides
checked = overrides.override
from multiagent.persistence import _chroma_open
made = []

def lacking_module():
    made.append(1)
    return types.ModuleType(_chroma_open._OTLP_SPANS)

_chroma_open._deferred_otlp_module = lacking_module
records = []
handler = logging.Handler()
handler.emit = records.append
logger = logging.getLogger("multiagent.persistence.memory")
logger.addHandler(handler)
logger.setLevel(logging.DEBUG)
answers = []
for name in ("first", "second"):
    client = _chroma_open.open_persistent_client(sys.argv[1] + "-" + name)
    found = client.get_or_create_collection("agent-x")
    found.upsert(ids=["a"], documents=["a text"], embeddings=[[0.1, 0.2, 0.3]])
    answers.append(found.query(query_embeddings=[[0.1, 0.2, 0.3]], n_results=1)["ids"])
    client.close()
exporter = sys.modules.get(_chroma_open._OTLP_SPANS)
print(json.dumps({
    "stand_in_made": len(made),
    "fallbacks_logged": [r.levelname for r in records if "lean Chroma import" in r.getMessage()],
    "restored": overrides.override is checked,
    "exporter_module_is_real": exporter is None or getattr(exporter, "__file__", None) is not None,
    "answers": answers,
}))
"""


def test_a_failing_lean_import_falls_back_to_a_plain_one(tmp_path: Path) -> None:
    result = run_chroma_probe(_PROBE, tmp_path / "chroma")
    assert result == {
        "stand_in_made": 1,  # the lean import was tried, once
        "fallbacks_logged": ["DEBUG"],  # once, at debug, for both opens
        "restored": True,  # overrides' own decorator is back
        "exporter_module_is_real": True,  # the stand-in is gone from sys.modules
        "answers": [[["a"]], [["a"]]],  # Chroma opened and answered both times
    }

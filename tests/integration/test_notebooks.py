"""The notebooks in notebooks/ run top to bottom on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
#: What each notebook prints once it has done its job.
PRINTS = {
    "quickstart.ipynb": ["streamed pieces of the synthesis"],
    "02_meetings_and_validation.ipynb": [
        "streamed pieces of the summary",
        "consensus table of 3 statements",
    ],
    "03_backpressure.ipynb": ["plotted 2 strategies"],
    "04_bring_your_own_model.ipynb": ["all three workflows ran on GenericFakeChatModel"],
}


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for expected in PRINTS[path.name]:
        assert expected in printed


def test_notebooks_are_stored_without_outputs() -> None:
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], path.name
                assert cell.execution_count is None, path.name

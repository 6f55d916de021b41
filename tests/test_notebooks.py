"""The notebooks in notebooks/ run top to bottom (nbclient) and are stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_four_notebooks():
    assert [path.name for path in NOTEBOOKS] == [
        "01_build_and_draw.ipynb", "02_kfac_reduce_depthwise.ipynb", "03_tensor_dropout.ipynb",
        "04_whole_model_kfac.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs are not stripped"
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
        if output.get("output_type") == "error"
    ]
    assert not errors

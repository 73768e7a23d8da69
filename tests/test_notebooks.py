"""The notebooks under notebooks/ run from top to bottom on the shipped captures (so
they never rot), and are committed clean: no outputs, no execution counts.

Each notebook is executed with nbclient on the ``python3`` kernel (ipykernel's),
with the repository root as the working directory, as CI runs them. Clean a notebook
before committing it with *Kernel → Restart & Clear Output*, or
``jupyter nbconvert --clear-output --inplace notebooks/*.ipynb``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import find_kernel_specs
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT_S = 120


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> Iterator[str]:
    """The ``python3`` kernel spec, installed into a temporary prefix (and found
    through JUPYTER_PATH) when the environment has none."""
    with pytest.MonkeyPatch.context() as mp:
        if KERNEL not in find_kernel_specs():
            from ipykernel.kernelspec import install

            prefix = tmp_path_factory.mktemp("jupyter")
            install(kernel_name=KERNEL, prefix=str(prefix))
            mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
            assert KERNEL in find_kernel_specs()
        yield KERNEL


def _execute(path: Path, kernel: str, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=kernel,
        resources={"metadata": {"path": str(cwd)}},
        allow_errors=False,  # the first failing cell raises CellExecutionError
    )
    client.execute()
    return nb


def _check_outputs(nb: nbformat.NotebookNode, name: str) -> None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{name} cell {i}: {errors[0].ename}: {errors[0].evalue}"
        if "plot_" in cell.source:  # the charts are displayed, not just their repr
            kinds = {k for o in cell.outputs for k in o.get("data", {})}
            assert "image/png" in kinds, f"{name} cell {i}: no figure displayed ({kinds})"


def test_there_are_notebooks():
    assert any(p.name == "investigate.ipynb" for p in NOTEBOOKS), NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts: clear them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, kernel, monkeypatch):
    # The notebook finds captures/ from its working directory (the repository root).
    monkeypatch.delenv("WSANALYZE_CAPTURES", raising=False)
    before = set((ROOT / "notebooks").iterdir())
    nb = _execute(path, kernel, ROOT)
    _check_outputs(nb, path.name)
    assert set((ROOT / "notebooks").iterdir()) == before, "the notebook left files behind"
    assert not list(ROOT.glob("*.parquet")), "the notebook exported into the repository"


def test_notebook_finds_captures_from_the_environment(kernel, monkeypatch, tmp_path):
    """Run outside the repository: WSANALYZE_CAPTURES says where the captures are."""
    monkeypatch.setenv("WSANALYZE_CAPTURES", str(ROOT / "captures"))
    path = min(NOTEBOOKS, key=lambda p: p.stat().st_size)
    nb = _execute(path, kernel, tmp_path)
    _check_outputs(nb, path.name)
    assert not list(tmp_path.iterdir())

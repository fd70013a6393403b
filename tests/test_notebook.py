"""notebooks/explore.ipynb runs top to bottom (headless, tiny setting) and is committed without outputs."""
import csv
import os

import jax
import jax.numpy as jnp
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from t2ijax.interop import prx_to_diffusers
from t2ijax.models.prx import PRX

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "explore.ipynb")


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _output_text(cell) -> str:
    data = lambda o, kind: "".join(o.get("data", {}).get(kind, ""))
    return "".join(o.get("text", "") + data(o, "text/plain") + data(o, "text/markdown") for o in cell.outputs)


def _tiny_prx_dir(directory) -> str:
    """A random PRX transformer in diffusers format, standing in for the hub checkpoint offline."""
    model = PRX(in_channels=4, patch_size=1, context_in_dim=8, hidden_size=32, num_heads=2, depth=1)
    x, text = jnp.zeros((1, 4, 4, 4)), jnp.zeros((1, 3, 8))
    params = model.init(jax.random.key(0), x, jnp.ones(1), text, jnp.ones((1, 3), bool))["params"]
    return str(prx_to_diffusers(model, params, directory))


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(_code_cells(nb)) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"code cells {dirty} keep outputs or execution counts; clear all outputs before committing"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("T2IJAX_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("T2IJAX_NOTEBOOK_WORKDIR", str(tmp_path / "workdirs"))
    monkeypatch.setenv("T2IJAX_NOTEBOOK_DATA", data_dir)  # the session's dataset, built once
    monkeypatch.setenv("T2IJAX_ONLINE", "0")
    monkeypatch.setenv("T2IJAX_PRX_CHECKPOINT", _tiny_prx_dir(tmp_path / "prx"))
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    cells = _code_cells(nb)
    images = [cell for cell in cells if any("image/png" in o.get("data", {}) for o in cell.outputs)]
    assert len(images) >= 5, "the dataset, loss curve, sample grids and ablation figures show as images"
    grid_dir = tmp_path / "workdirs" / "prediction"
    with open(grid_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["variant"] for row in rows) == ["velocity", "x0"]
    assert all(np.isfinite(float(row["composition/colour"])) for row in rows)
    assert "| velocity (baseline) |" in "".join(_output_text(c) for c in cells)
    prx = _output_text(cells[-1])
    assert "M parameters, hidden 32, depth 1" in prx and "one denoiser call on noise at t = 1: output (1, 16, 16, 4)" in prx

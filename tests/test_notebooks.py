"""The notebooks in notebooks/ execute top to bottom (nbclient) with a tiny training budget.

The override cell goes right after each notebook's cell tagged 'parameters', as papermill would
inject it, so the notebooks keep their real defaults.
"""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(__file__), os.pardir, "notebooks")


def execute(name, workdir, **parameters):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    index = next(i for i, cell in enumerate(nb.cells)
                 if "parameters" in cell.get("metadata", {}).get("tags", []))
    extra = "".join(f"\n{key} = {value!r}" for key, value in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(
        f"EPOCHS = 1\nTINY_MODEL = True\nWORKDIR = {str(workdir)!r}{extra}"))
    NotebookClient(nb, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": NOTEBOOKS}}).execute()
    return nb


def outputs(nb, output_type=None):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            if output_type is None or out.get("output_type") == output_type:
                yield out


@pytest.mark.slow
def test_quickstart_runs_and_shows_tables_and_pictures(tmp_path):
    nb = execute("quickstart.ipynb", tmp_path)
    shown = list(outputs(nb, "display_data"))
    markdown = "".join(o["data"].get("text/markdown", "") for o in shown)
    assert "| BalPoE | 3 |" in markdown and "| CE | 1 |" in markdown
    assert "| backward-50 |" in markdown
    assert sum("image/png" in o["data"] for o in shown) >= 4  # 2 reliability + 2 more.
    printed = "".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert printed.count("true ") == 5
    for method in ("ce", "balpoe"):
        assert os.path.isfile(tmp_path / method / "eval" / "report.json")


# Every digits config trains to its end in test_every_config; the tour runs three kinds here
# (one expert, a multi-stage method, a decoupled finish step) to check the notebook itself.
TOUR = ["digits_lt_ce", "digits_lt_ride", "digits_lt_ce_tau_norm"]


@pytest.mark.slow
def test_method_tour_runs_the_chosen_digits_configs(tmp_path):
    nb = execute("method_tour.ipynb", tmp_path, ONLY=TOUR)
    markdown = "".join(o["data"].get("text/markdown", "")
                       for o in outputs(nb, "display_data"))
    for name in TOUR:
        assert f"| {name} |" in markdown, name
        assert os.path.isfile(tmp_path / name / "final_metrics.json")
    assert "| digits_lt_balpoe |" not in markdown  # ONLY chose.


@pytest.mark.parametrize("name", ["quickstart.ipynb", "method_tour.ipynb"])
def test_notebooks_are_stored_with_the_outputs_of_a_full_run(name):
    """A reader sees what the notebook prints before running it: every code cell was executed
    in order, none failed, and the last one shows its table."""
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    for cell in code:
        assert all(out.get("output_type") != "error" for out in cell.outputs)
    assert code[-1].outputs, "the last cell shows nothing"
    shown = "".join(out.get("text", "") + "".join(out.get("data", {}).get("text/markdown", ""))
                    for cell in code for out in cell.outputs)
    if name == "quickstart.ipynb":  # The defaults' 60 epochs, not the tests' tiny budget.
        assert shown.count("(60 epochs)") == 2
    else:  # Every digits config of configs/.
        configs = glob.glob(os.path.join(NOTEBOOKS, os.pardir, "configs", "digits_lt_*.py"))
        for path in configs:
            assert f"| {os.path.basename(path)[:-3]} |" in shown, path

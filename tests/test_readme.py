"""The README's tables are the result files' numbers: regenerating them changes nothing."""

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tables_match_the_result_files(tmp_path):
    spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
    assert spec and spec.loader
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    copy = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", copy)
    tables.update_readme(copy)
    assert copy.read_text() == (ROOT / "README.md").read_text(), \
        "README tables differ from results/: run `python benchmarks/tables.py --readme`"
    assert "<!-- table summary -->" in copy.read_text()

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


def test_every_python_block_runs_as_written_or_says_it_is_an_excerpt(tmp_path):
    import re
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    ran = 0
    for block in blocks:
        if block.lstrip().startswith("# excerpt of "):
            source = block.lstrip().splitlines()[0].removeprefix("# excerpt of ").split(":")[0].strip()
            assert (ROOT / source).exists(), source
            continue
        proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"README block fails as written:\n{block}\n{proc.stderr[-2000:]}"
        ran += 1
    assert ran >= 1


def test_the_serving_commands_are_the_ones_the_serve_demo_measured():
    """The README's serving section trains and serves exactly as `make serve-demo` does, so its table
    is what a user who copies the commands gets (a dry run shows the resolved configuration)."""
    import re
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location("serve_demo", ROOT / "scripts" / "serve_demo.py")
    assert spec and spec.loader
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    readme = (ROOT / "README.md").read_text()
    train = re.search(r"^lifelong run (.*) --save model/$", readme, flags=re.M)
    assert train and tuple(train.group(1).split()) == demo.TRAIN
    serve = re.search(r"^lifelong serve --model model/ .*--tolerance (\S+)", readme, flags=re.M)
    assert serve, "the README's serve command states the gate's tolerance the demo used"
    assert float(serve.group(1)) == demo.TOLERANCE
    proc = subprocess.run([sys.executable, "-m", "lifelong", "run", *demo.TRAIN, "--dry-run"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert '"memory": 4000' in proc.stdout and '"epochs": 10' in proc.stdout

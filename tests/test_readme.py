"""The README's Python samples run, and its test command is what CI runs."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_sample_runs(index):
    exec(compile(python_blocks(README)[index], f"README.md[python {index}]", "exec"), {})


def test_ci_runs_the_readme_test_command():
    command = re.search(r"<!-- test-command -->\n```bash\n(.*)\n", README).group(1)
    assert command.startswith("pip install") and "pytest" in command
    assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text()

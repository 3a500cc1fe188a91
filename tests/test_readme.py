"""The README's actor and task snippet runs as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_actor_and_task_snippet_runs_as_written(tmp_path: Path) -> None:
    section = README.read_text().split("## Actors and tasks", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "snippet.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n") == ["[2, 4, 6]", "[0, 1, 4, 9]", "42", ""]

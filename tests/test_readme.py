"""The README's picture of the tree matches the tree: every module and package of `lab` is in
its Layout section, and everything the section names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    return section[section.index("```") + 3:].split("```")[0]


def test_every_module_of_lab_is_in_the_readme_layout():
    block = _layout_block()
    words = set(re.findall(r"[A-Za-z_][\w]*", block))
    missing = []
    for path in sorted((ROOT / "lab").iterdir()):
        if path.suffix == ".py" and path.stem != "__init__":
            if f"lab/{path.name}" not in block:
                missing.append(f"lab/{path.name}")
        elif path.is_dir() and (path / "__init__.py").exists():
            if f"lab/{path.name}/" not in block:
                missing.append(f"lab/{path.name}/")
            for module in sorted(path.glob("*.py")):
                if module.stem != "__init__" and module.stem.lstrip("_") not in words \
                        and not module.stem.startswith("_"):
                    missing.append(f"{path.name}/{module.name}")
            for sub in sorted(p for p in path.iterdir() if (p / "__init__.py").exists()):
                if sub.name not in words:
                    missing.append(f"{path.name}/{sub.name}/")
    assert not missing, f"not in the README's Layout section: {', '.join(missing)}"


def test_everything_the_layout_names_exists():
    named = re.findall(r"lab/[\w/]+(?:\.py|/)", _layout_block())
    absent = [name for name in named if not (ROOT / name).exists()]
    assert not absent, f"the README's Layout names what is not there: {', '.join(absent)}"

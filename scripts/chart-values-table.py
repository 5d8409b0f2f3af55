#!/usr/bin/env python3
"""The values table of charts/prom-mtls-webhook/README.md, made from values.yaml.

Every key whose comment starts with `# --` gets a row: its path, its default
(as JSON), and the comment (continued by the `#` lines that follow it).

    scripts/chart-values-table.py           # rewrite the README's table
    scripts/chart-values-table.py --check   # exit 1 if the README's table differs

Needs PyYAML (scripts/install-tools.sh puts it in .tools/venv).
"""
import json
import pathlib
import re
import sys

import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent / "charts" / "prom-mtls-webhook"
HEADING = "\n## Values\n"
HEADER = "| key | default | description |\n|---|---|---|\n"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):")


def rows(values_text):
    values = yaml.safe_load(values_text)
    stack = []  # (indent, key)
    description = None
    out = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            description = stripped[4:].strip()
            continue
        if stripped.startswith("#"):
            if description is not None:
                description += " " + stripped[1:].strip()
            continue
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if description is None:
            continue
        path = [key for _, key in stack]
        default = values
        for key in path:
            default = default[key]
        text = json.dumps(default, ensure_ascii=False, separators=(", ", ": "))
        out.append(f"| `{'.'.join(path)}` | `{text}` | {description} |\n")
        description = None
    return "".join(out)


def main():
    readme_path = CHART / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    before, _, _ = readme.partition(HEADING)
    table = HEADER + rows((CHART / "values.yaml").read_text(encoding="utf-8"))
    wanted = before + HEADING + "\n" + table
    if "--check" in sys.argv[1:]:
        if readme != wanted:
            sys.exit("the chart README's values table is out of date: run scripts/chart-values-table.py")
        return
    readme_path.write_text(wanted, encoding="utf-8")


if __name__ == "__main__":
    main()

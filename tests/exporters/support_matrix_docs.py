"""Run the support matrix and write its table into docs/graph-export.md (``make docs``).

The table is :func:`test_support_matrix.render_table` of the module's ``EXPECTED``
outcomes: it is written only when a run of the matrix observed exactly those
outcomes, so the docs say what the suite proves. ``test_docs_table_is_expected``
fails when the committed table and ``EXPECTED`` differ.

Usage::

    python tests/exporters/support_matrix_docs.py            # run the matrix, then write
    python tests/exporters/support_matrix_docs.py --json R   # check a run's results R, then write
    python tests/exporters/support_matrix_docs.py --no-run   # write from EXPECTED unchecked

Exit status: 0 written, 1 the run disagreed with ``EXPECTED`` (nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import test_support_matrix as matrix  # noqa: E402  (after the path it lives on)


def run_matrix(out: Path) -> int:
    """Run the matrix's cells with pytest; their results go to ``out`` (JSON)."""
    env = dict(os.environ, SUPPORT_MATRIX_JSON=str(out))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "test_cell or test_tensorrt_static_check",  # the docs test checks what this writes
        str(HERE / "test_support_matrix.py"),
    ]
    return subprocess.call(cmd, cwd=matrix.ROOT, env=env)


def disagreements(results: dict) -> list[str]:
    """Cells whose observed outcome is not the expected one (or that did not run)."""
    seen = {(c["model"], c["form"], c["engine"], c["precision"]): c for c in results["cells"]}
    wrong = []
    for cell, want in matrix.EXPECTED.items():
        expected = (
            "refused"
            if isinstance(want, matrix.Refused)
            else "fail"
            if isinstance(want, matrix.Fails)
            else "pass"
        )
        got = seen.get(cell)
        if got is None:
            wrong.append(f"{'/'.join(cell)}: did not run (skipped or not collected)")
        elif got["outcome"] != expected:
            wrong.append(
                f"{'/'.join(cell)}: expected {expected}, got {got['outcome']}: {got['detail']}"
            )
    return wrong


def write_docs() -> bool:
    """Replace the table between the markers; True when the file changed."""
    text = matrix.DOCS.read_text()
    start = text.index(matrix.BEGIN) + len(matrix.BEGIN)
    end = text.index(matrix.END)
    new = text[:start] + "\n" + matrix.render_table() + "\n" + text[end:]
    if new != text:
        matrix.DOCS.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="results of a finished run to check")
    parser.add_argument("--no-run", action="store_true", help="write from EXPECTED unchecked")
    args = parser.parse_args(argv)
    if not args.no_run:
        path = args.json
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="support-matrix-")) / "results.json"
            run_matrix(path)
        if not path.exists():
            print(f"no results at {path}: the matrix did not run", file=sys.stderr)
            return 1
        results = json.loads(path.read_text())
        for name, seconds in sorted(results.get("exports", {}).items()):
            print(f"export {name}: {seconds} s")
        wrong = disagreements(results)
        if wrong:
            print("the matrix disagrees with EXPECTED; docs not written:", file=sys.stderr)
            for line in wrong:
                print(f"  {line}", file=sys.stderr)
            return 1
    changed = write_docs()
    print(f"{matrix.DOCS}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

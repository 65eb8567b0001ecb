"""The command line is the parser tree committed in tests/parser_tree.json (see tests/parser_tree.py):
every command, flag, dest, default, help, choices and type. Refactoring how the options are added must
leave it as it is; an intended change regenerates the file."""

import json
from pathlib import Path

from tests.parser_tree import dump


def test_parser_tree_is_the_committed_one():
    committed = json.loads((Path(__file__).parent / "parser_tree.json").read_text())
    now = json.loads(json.dumps(dump(), sort_keys=True))
    assert now == committed, (
        "the edgecompress parser tree changed; if intended, regenerate: "
        "PYTHONPATH=src:. python -m tests.parser_tree > tests/parser_tree.json"
    )

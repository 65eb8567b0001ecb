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
        ".venv/bin/python -m tests.parser_tree > tests/parser_tree.json (from the repository root)"
    )


def test_a_command_is_named_and_described_by_its_function():
    import argparse

    from edgecompress.entry import add_command

    def cmd_isa_check(args):
        """check a child on each ISA
        (one paragraph)

        What it does, at length:
        two lines."""
        return 0

    sub = argparse.ArgumentParser().add_subparsers()
    p = add_command(sub, cmd_isa_check)
    assert sub.choices == {"isa-check": p} and p.get_default("func") is cmd_isa_check
    assert sub._choices_actions[0].help == "check a child on each ISA (one paragraph)"
    assert p.description == "What it does, at length: two lines."

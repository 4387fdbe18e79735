"""Every sub-command's --help explains every option and prints each default once."""
from __future__ import annotations

import argparse
import re

import pytest

from mar3d.cli.main import build_parser


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "mar3d"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subparsers(sub, f"{prefix} {name}")


COMMANDS = dict(_subparsers(build_parser()))


def test_every_stage_has_a_command():
    assert {"mar3d prepare", "mar3d train", "mar3d generate", "mar3d serve", "mar3d evaluate"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_explains_every_option_and_prints_each_default_once(command):
    parser = COMMANDS[command]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"{command} {'/'.join(action.option_strings) or action.dest}: no help text"
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text, command
    # One option's help, joined over its wrapped lines, names its default at most once.
    for block in re.split(r"\n  (?=-)", text):
        assert len(re.findall(r"\bdefault\b", " ".join(block.split()))) <= 1, f"{command}: {block}"


def test_generate_help_names_the_bundled_defaults():
    text = " ".join(COMMANDS["mar3d generate"].format_help().split())
    assert "bundled demo model:" in text and "--quality" in text and "0 keeps every face" in text

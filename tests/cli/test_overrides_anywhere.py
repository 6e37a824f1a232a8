"""``key=value`` overrides anywhere among the flags, for every command that takes them
(parsing only: no command runs)."""

from __future__ import annotations

import pytest

from adasp.cli import build_parser, parse_command_line

#: Every command that takes overrides, with the flags it needs.
COMMANDS = {
    "train": ["--config", "quickstart", "--output", "R"],
    "evaluate": ["--checkpoint", "R/model.pt", "--output", "E"],
    "extract": ["--checkpoint", "R/model.pt", "--output", "e.npz"],
    "export": ["--checkpoint", "R/model.pt", "--output", "m.onnx"],
    "sweep": ["--config", "quickstart", "--grid", "loss.weight=0.1,0.5", "--output", "S"],
    "config": ["--config", "quickstart", "--dataset", "market1501"],
}

#: A flag without a value that each command takes (to put overrides after it).
SWITCH = {
    "train": "--resume",
    "evaluate": "--device=cpu",
    "extract": "--device=cpu",
    "export": "--include-normalization",
    "sweep": "--processes",
    "config": "--check-data",
}


def test_every_command_with_overrides_is_covered():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    with_overrides = {
        name
        for name, sub in subparsers.choices.items()
        if any(action.dest == "overrides" for action in sub._actions)
    }
    assert with_overrides == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_overrides_before_between_and_after_flags(command):
    flags = COMMANDS[command]
    argv = [
        command,
        "a.b=0",
        *flags[:2],
        "schedule.epochs=1",
        *flags[2:],
        SWITCH[command],
        "loss.temperature=0.07",
        "--plugin",
        "json",
        "data.image_size=[64, 32]",
    ]
    args = parse_command_line(argv)
    assert args.command == command
    # All of them, in command-line order (the last one wins when a key repeats).
    assert args.overrides == [
        "a.b=0",
        "schedule.epochs=1",
        "loss.temperature=0.07",
        "data.image_size=[64, 32]",
    ]
    assert args.command_plugins == ["json"]


def test_the_issue_example():
    args = parse_command_line(
        "train --config quickstart --output R schedule.epochs=1 --resume "
        "loss.temperature=0.07".split()
    )
    assert args.overrides == ["schedule.epochs=1", "loss.temperature=0.07"]
    assert args.resume is True and args.output == "R" and args.config == "quickstart"


def test_values_of_flags_are_never_taken_as_overrides():
    args = parse_command_line(
        ["train", "--config", "quickstart", "--root", "data=1", "--output", "a=b", "x=1"]
    )
    assert args.root == "data=1" and args.output == "a=b" and args.overrides == ["x=1"]
    args = parse_command_line(["train", "--config", "quickstart", "--output", "R"])
    assert args.overrides == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_flags_and_words_are_still_errors(command, capsys):
    for extra in (["--no-such-flag"], ["--no-such=1"], ["stray"]):
        with pytest.raises(SystemExit) as error:
            parse_command_line([command, *COMMANDS[command], "k=v", SWITCH[command], *extra])
        assert error.value.code == 2
        message = capsys.readouterr().err
        assert f"adasp {command}: error: unrecognized arguments: {extra[0]}" in message
        assert f"usage: adasp {command}" in message


def test_a_command_without_overrides_says_so(capsys):
    with pytest.raises(SystemExit):
        parse_command_line(["search", "--embeddings", "e.npz", "loss.temperature=0.1"])
    message = capsys.readouterr().err
    assert "unrecognized arguments: loss.temperature=0.1" in message
    assert "adasp search takes no key=value config overrides" in message


def test_warnings_are_one_line_like_errors():
    import warnings

    from adasp.cli import _one_line_warnings

    original = warnings.formatwarning
    with _one_line_warnings("train"):
        text = warnings.formatwarning("clamped to 1", UserWarning, "/x/config.py", 12)
    assert text == "adasp train: warning: clamped to 1\n"
    assert warnings.formatwarning is original

"""The options the training commands share (segapp/cli/training_options.py): one flag, one
help text and one default wherever a command offers it."""
import pytest

from segapp.cli import build_parser, main

COMMANDS = {"train": ["--annotations", "a.json", "--images", "i"], "train-video": ["--videos", "v"],
            "pretrain": ["--images", "i"]}


def _action(command: str, flag: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if flag in a.option_strings)


@pytest.mark.parametrize("flag", ["--lr", "--weight-decay", "--grad-clip", "--seed", "--device", "--amp",
                                  "--resume", "--max-steps-per-epoch"])
def test_shared_flags_say_the_same_in_every_training_command(flag):
    helps = {c: _action(c, flag).help for c in COMMANDS}
    assert len(set(helps.values())) == 1, helps


@pytest.mark.parametrize("command", COMMANDS)
def test_unset_recipe_options_defer_to_the_config(command):
    args = build_parser().parse_args([command, *COMMANDS[command]])
    # Shown by --help as the config's value, left out of the recipe the command builds.
    from segapp.cli.training_options import RecipeDefault, recipe_values

    assert isinstance(args.seed, RecipeDefault) and str(args.seed) == "0"
    assert str(args.amp) == "auto"
    assert recipe_values(args, ["seed", "amp", "lr"]) == {}
    args = build_parser().parse_args([command, *COMMANDS[command], "--seed", "3", "--amp", "off"])
    assert recipe_values(args, ["seed", "amp", "lr"]) == {"seed": 3, "amp": "off"}


@pytest.mark.parametrize("command", COMMANDS)
def test_image_size_not_a_multiple_of_32_exits_2(tmp_path, capsys, command):
    for name in ("i", "v"):
        (tmp_path / name).mkdir()
    (tmp_path / "a.json").write_text("{}")
    argv = [command, *[str(tmp_path / a) if a in ("a.json", "i", "v") else a for a in COMMANDS[command]],
            "--image-size", "100", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--image-size must be a positive multiple of 32, got 100" in capsys.readouterr().err

"""`--help` lists every config key with its default and a one-line doc, generated from the config tree."""
import pytest

from bench.cli import main
from bench.config_help import config_keys, field_comments
from bench.core.config import TrainConfig


def test_every_config_field_has_help_text():
    undocumented = [key for key, _, doc in config_keys() if not doc]
    assert undocumented == [], f"add a comment on the field's line in bench/core/config.py: {undocumented}"


def test_field_comments_are_read_from_the_line_that_declares_the_field():
    docs = field_comments(TrainConfig)
    assert docs["epochs"] == "length of the LR schedule"
    assert docs["tta"].startswith("test-time augmentation: none | flip | flip_translate")


@pytest.mark.parametrize("command", ["run", "race", "ladder", "lr-find", "show-config", "profile"])
def test_help_of_each_command_that_takes_overrides_lists_every_key_with_its_default(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for key, default, doc in config_keys():
        if key in ("preset", "variant", "profile"):
            continue
        value = str(default).lower() if isinstance(default, bool) else str(default)
        assert f"--{key}={value}  {doc}" in out, key


def test_every_option_of_every_command_has_help_and_shows_its_default(capsys):
    from bench.cli import _parser
    sub = next(a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    bare = [f"{name} {a.option_strings[0]}" for name, p in sub.choices.items() for a in p._actions
            if a.option_strings and not a.help]
    assert bare == []
    with pytest.raises(SystemExit):
        main(["lr-find", "--help"])
    assert "LR spacing of the range test (default: exp)" in capsys.readouterr().out


def test_show_config_prints_indented_json_that_parses(capsys):
    import json
    assert main(["show-config", "--preset=fast4", "--variant=fast", "--profile=full"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["train"]["epochs"] == 4 and '\n  "train": {' in out

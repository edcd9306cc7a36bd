"""Unknown options are reported by the subcommand they were given to, with the closest option it
has (fresh-user trial: `generate --lora-path` printed the top-level usage and no hint)."""
import pytest

from blinkgen import cli


@pytest.mark.parametrize("argv, want", [
    (["generate", "a", "--lora-path", "x"], "blinkgen generate: error: unrecognized arguments: --lora-path x "
                                            "(--lora-path: did you mean --lora?)"),
    (["edit", "a.png", "b", "--seeed", "3"], "(--seeed: did you mean --seed?)"),
    (["generate", "a", "--zzzz"], "unrecognized arguments: --zzzz"),
])
def test_unknown_options_get_the_subcommands_usage_and_a_hint(argv, want, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and want in err and f"usage: blinkgen {argv[0]}" in err, err

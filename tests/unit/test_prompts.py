"""blinkgen.prompts: inline alternatives, wildcard files, per-seed draws."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinkgen.errors import UserInputError
from blinkgen.prompts import Choice, Wildcard, Wildcards, expand, is_template, parse, resolve, wildcard_dirs

PLAIN = st.text(alphabet=st.characters(blacklist_characters="{}|\\_", blacklist_categories=("Cs",)), min_size=1,
                max_size=40).filter(str.strip)


@pytest.fixture
def wc(tmp_path):
    d = tmp_path / "wc"
    (d / "sub").mkdir(parents=True)
    (d / "colour.txt").write_text("red\nblue\n\n{green|yellow}\n", encoding="utf-8")
    (d / "shape.txt").write_bytes("\ufeffcircle\r\nsquare\r\n".encode("utf-8"))  # Notepad: BOM + CRLF
    (d / "sub" / "size.txt").write_text("small\nlarge\n")
    (d / "loop.txt").write_text("__loop__\n")
    (d / "empty.txt").write_text("\n \n")
    return Wildcards((d,))


@settings(max_examples=60, deadline=None)
@given(PLAIN, st.integers(0, 2**63 - 1))
def test_plain_prompts_come_back_unchanged(text, seed):
    assert resolve(text, seed, Wildcards(())) == text and not is_template(text)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["red", "blue", "green", "a b", ""]), min_size=2, max_size=5, unique=True),
       st.integers(0, 2**63 - 1))
def test_a_choice_is_one_of_its_options_and_fixed_by_the_seed(options, seed):
    t = "x {" + "|".join(options) + "} y"
    got = resolve(t, seed, Wildcards(()))
    assert got in {f"x {o} y" for o in options}
    assert resolve(t, seed, Wildcards(())) == got


def test_every_option_is_reached_and_draws_are_independent_of_the_list(wc):
    t = "a {red|blue|green} __shape__"
    seen = {resolve(t, s, wc) for s in range(60)}
    assert seen == {f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square")}
    seeds = list(range(20))
    together = expand([t] * 20, seeds, wc)
    assert together == [resolve(t, s, wc) for s in seeds]
    assert expand([t] * 10, seeds[10:], wc) == together[10:]  # a prompt depends on its own seed only


def test_parse_tree_literals_and_escapes():
    assert parse("a {red|{b|c}} __x/y__") == ("a ", Choice((("red",), (Choice((("b",), ("c",))),))), " ", Wildcard("x/y"))
    assert resolve("a {x} b", 0, Wildcards(())) == "a {x} b"  # no bar: literal braces
    assert resolve(r"\{a|b\} \__x__", 3, Wildcards(())) == "{a|b} __x__"
    assert resolve("a | b", 0, Wildcards(())) == "a | b"
    assert resolve("keep __ this _x_", 0, Wildcards(())) == "keep __ this _x_"


def test_wildcard_files_nested_and_in_subfolders(wc):
    got = {resolve("__colour__", s, wc) for s in range(60)}
    assert got == {"red", "blue", "green", "yellow"}  # a chosen line is a template too
    assert {resolve("__sub/size__", s, wc) for s in range(30)} == {"small", "large"}


@pytest.mark.parametrize("template, word", [("__nope__", "nope.txt"), ("__loop__", "cycle"), ("__empty__", "no choices"),
                                            ("a {b|c", "unclosed"), ("{|}", "empty")])
def test_errors_are_one_line(wc, template, word):
    with pytest.raises(UserInputError, match=word) as e:
        resolve(template, 0, wc)
    assert "\n" not in str(e.value)


def test_unknown_wildcard_lists_the_folders(tmp_path):
    w = Wildcards(wildcard_dirs([tmp_path / "a"], tmp_path / "p" / "prompts.txt", env={"BLINKGEN_WILDCARDS": str(tmp_path / "e")}))
    with pytest.raises(UserInputError) as e:
        resolve("__x__", 0, w)
    msg = str(e.value)
    order = [str(tmp_path / "a"), str(tmp_path / "p" / "wildcards"), str(tmp_path / "e"), "wildcards"]
    assert all(o in msg for o in order) and msg.index(order[0]) < msg.index(order[1]) < msg.index(order[2])


def test_first_folder_wins(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "c.txt").write_text("from-a\n")
    (b / "c.txt").write_text("from-b\n")
    assert resolve("__c__", 0, Wildcards((a, b))) == "from-a"
    assert resolve("__c__", 0, Wildcards((b, a))) == "from-b"

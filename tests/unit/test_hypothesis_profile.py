"""Property tests carry no wall-clock deadline (tests/conftest.py): a loaded 2-core CI machine
made hypothesis's 200 ms default fail a correct test, and speed belongs in bench/."""
from hypothesis import given, settings
from hypothesis import strategies as st


def test_the_suite_profile_has_no_deadline():
    assert settings.default.deadline is None


@given(st.integers())
def test_a_given_test_without_its_own_settings_inherits_it(x):
    assert settings.default.deadline is None

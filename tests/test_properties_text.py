"""Property tests of text validation: textgym.core.validate_text and validate_messages.

Any string either passes unchanged or raises ValueError naming the field and the value; any
non-string raises TypeError naming the field and its type; valid Unicode always passes.
"""

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from textgym.core import ROLES, validate_messages, validate_text

# Every code point, lone surrogates and control characters included.
ANY_CHARACTER = st.characters(exclude_categories=())
ANY_TEXT = st.one_of(st.text(ANY_CHARACTER, max_size=100), st.text(st.characters(codec="ascii"), max_size=100))
# Valid model input: no control characters except layout ones, no surrogates.
VALID_CHARACTER = st.one_of(st.characters(exclude_categories=("Cc", "Cs")), st.sampled_from("\n\t\r"))
VISIBLE_CHARACTER = st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"))
VALID_TEXT = st.builds(
    lambda before, visible, after: before + visible + after,
    st.text(VALID_CHARACTER, max_size=50),
    VISIBLE_CHARACTER.filter(lambda c: not c.isspace()),
    st.text(VALID_CHARACTER, max_size=50),
)
NOT_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=10),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)

UNICODE_SAMPLES = [
    "Family: 👨‍👩‍👧‍👦, coder 👩🏽‍💻, flag 🇫🇷, rainbow flag 🏳️‍🌈",  # ZWJ sequences, skin tone, regional indicators
    "שלום, מה שלומך? مرحبا كيف حالك",  # right-to-left scripts
    "\u202bRTL embedding\u202c and \u200fRLM\u200e LRM",  # bidi format characters (category Cf)
    "e\u0301 n\u0303 Z\u0351\u0352\u0357a\u035c\u0361l\u0334g\u0335o\u0336",  # combining marks
    "東京 नमस्ते 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \ufeffBOM inside",  # CJK, Devanagari, astral plane, BOM
    "line one\nline two\r\n\tindented",  # layout control characters pass
]


def documented_rule_accepts(text: str) -> bool:
    """validate_text's documented rule: not blank, no control character but newline, tab and CR, no surrogate."""
    categories = [unicodedata.category(c) for c in text]
    return (
        bool(text.strip())
        and "Cs" not in categories
        and all(category != "Cc" or char in "\n\t\r" for char, category in zip(text, categories, strict=True))
    )


@settings(max_examples=500)
@given(ANY_TEXT)
@example("")
@example(" \u3000\n")  # ideographic space: blank
@example("ok\x00")
@example("bad \ud800 surrogate")
@example("x" * 200 + "\x07")  # the value is named even when the repr is cut
def test_any_string_passes_unchanged_or_is_named_in_a_value_error(text):
    try:
        result = validate_text(text, "the field")
    except ValueError as error:
        assert not documented_rule_accepts(text)
        message = str(error)
        assert message.startswith("the field ")
        assert repr(text)[:80] in message
    else:
        assert documented_rule_accepts(text)
        assert result is text


@settings(max_examples=300)
@given(VALID_TEXT)
def test_valid_unicode_passes(text):
    assert validate_text(text, "message") is text


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_unicode_samples_pass(text):
    assert validate_text(text, "message") is text


@settings(max_examples=200)
@given(st.text(VALID_CHARACTER, max_size=30), st.sampled_from("\x00\x07\x1b\x7f\x85"), VALID_TEXT)
def test_control_character_is_located(before, control, after):
    # A blank prefix does not matter: the text is not blank, so the character is what is reported.
    with pytest.raises(ValueError) as raised:
        validate_text(before + control + after, "reply")
    assert f"control character {control!r} at index {len(before)}" in str(raised.value)


@settings(max_examples=200)
@given(NOT_TEXT)
def test_non_strings_raise_type_error_naming_the_type(value):
    with pytest.raises(TypeError) as raised:
        validate_text(value, "the field")
    assert str(raised.value).startswith(f"the field must be a str, got {type(value).__name__}")


MESSAGES = st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": VALID_TEXT}), min_size=1)


@settings(max_examples=200)
@given(MESSAGES)
def test_valid_messages_pass_as_equal_copies(messages):
    checked = validate_messages(messages)
    assert checked == messages
    assert all(out is not inp for out, inp in zip(checked, messages, strict=True))  # callers may mutate the copy


@settings(max_examples=300)
@given(MESSAGES, st.data())
def test_one_bad_message_is_named_by_index(messages, data):
    index = data.draw(st.integers(0, len(messages) - 1), label="bad index")
    broken = data.draw(
        st.one_of(
            st.builds(lambda content: ("content", content), st.one_of(NOT_TEXT, ANY_TEXT)),
            st.builds(lambda role: ("role", role), st.one_of(st.text(max_size=10), st.integers(), st.none())),
            st.just(("keys", None)),
        ),
        label="breakage",
    )
    kind, value = broken
    bad = [dict(m) for m in messages]
    if kind == "keys":
        bad[index]["name"] = "extra"
    else:
        bad[index][kind] = value
    valid_content = isinstance(bad[index]["content"], str) and documented_rule_accepts(bad[index]["content"])
    if kind != "keys" and bad[index]["role"] in ROLES and valid_content:
        assert validate_messages(bad) == bad  # the draw left the message valid
        return
    with pytest.raises((TypeError, ValueError)) as raised:
        validate_messages(bad)
    assert f"messages[{index}]" in str(raised.value)


@settings(max_examples=100)
@given(st.one_of(NOT_TEXT.filter(lambda v: not isinstance(v, list) or not v), st.text(max_size=10), st.just([])))
def test_messages_must_be_a_non_empty_list(value):
    with pytest.raises(ValueError, match="messages must be a non-empty list"):
        validate_messages(value)

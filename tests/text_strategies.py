"""Hypothesis strategies of text shared by the property tests.

Arbitrary Unicode alone rarely repeats a word, so overlap metrics would almost always see 0;
``word_texts`` joins words from a small mixed-script vocabulary with punctuation and spaces,
so that predictions and references share words, repeat them and differ in case.
"""

from hypothesis import strategies as st

#: Words in several scripts and forms: ASCII, accents, CJK, RTL, emoji ZWJ sequences, combining marks,
#: numbers, dates and answer markers (the SparseCompletion reader's vocabulary).
WORDS = (
    "the", "The", "THE", "cat", "cats", "sat", "on", "mat", "Paris", "is", "capital", "of", "France",
    "good", "great", "wonderful", "terrible", "not", "very", "movie", "running", "runs",
    "42", "3.50", "-7", "1,234", ".5", "0", "Monday", "thu", "2024-03-05", "March 5, 2024",
    "Answer:", "answer =", "or", "and", "maybe", "\\boxed{",
    "café", "naïve", "straße", "東京", "שלום", "مرحبا", "नमस्ते", "👩‍💻", "👍🏽", "🇫🇷", "e\u0301", "İ", "K",
)  # fmt: skip
SEPARATORS = (" ", "  ", "\n", "\n\n", "\t", ", ", ". ", "! ", "? ", " - ", ": ", "", "...", " (", ") ")


def _join(pairs: list[tuple[str, str]]) -> str:
    return "".join(word + separator for word, separator in pairs)


#: Texts of vocabulary words, including the empty text.
word_texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=24).map(_join)

#: Any text a model could write: arbitrary Unicode (no lone surrogates, which no decoder produces),
#: ASCII with control characters, or vocabulary words.
texts = st.one_of(
    word_texts,
    st.text(max_size=120),
    st.text(st.characters(codec="ascii"), max_size=120),
)

#: Texts that a metric accepts as a reference: at least one non-space character.
references = texts.filter(lambda text: text.strip() != "")

"""An offline word and sentence splitter for datatrove's quality filters.

datatrove assigns English to spaCy or NLTK punkt, which download data at run time; these regexes need nothing and are
close enough for the Gopher/C4/FineWeb ratios (word counts, mean word length, stop words, sentence counts).
"""

from __future__ import annotations

import re

from datatrove.utils.word_tokenizers import WordTokenizer

_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
# a sentence ends at . ! ? (and closing quotes/brackets) followed by whitespace, or at a blank line
_SENT_END = re.compile(r"(?<=[.!?。！？])[\"'”’)\]]*\s+|\n\s*\n")


class OfflineTokenizer(WordTokenizer):
    """Regex tokenizer: words and punctuation marks as tokens, sentences split on terminal punctuation."""

    def __init__(self) -> None:
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [text[a:b] for a, b in self.span_tokenize(text)]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for m in _SENT_END.finditer(text):
            if text[start : m.start()].strip():
                spans.append((start, m.start()))
            start = m.end()
        if text[start:].strip():
            spans.append((start, len(text)))
        return spans

    def __reduce__(self):  # rebuilt by class in worker processes, so datatrove's caches key on an equal object
        return (OfflineTokenizer, ())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OfflineTokenizer)

    def __hash__(self) -> int:
        return hash(OfflineTokenizer)


OFFLINE = OfflineTokenizer()

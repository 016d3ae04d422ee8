"""Text folding shared by the search index and search queries: lower case, diacritics removed,
split into words of letters and digits (what FTS5's unicode61 tokenizer with remove_diacritics
does on SQLite). Indexing and querying fold the same way, so they always agree."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Lower-case words of letters and digits, diacritics removed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _WORD.findall(plain)


def fold(text: str) -> str:
    """What is indexed of a message body: its words, space-separated."""
    return " ".join(words(text))

"""Free-text search over the index, in SQLite's FTS5 and in PostgreSQL's full-text search.

Both see the same words: runs of letters and digits, lower-cased (FTS5's ``unicode61``
tokenizer; for PostgreSQL the text is cut the same way here before ``to_tsvector('simple')``,
since its own parser keeps ``10.0.0.1`` or ``host.example.com`` whole). Both read a query the
same way: every word of it must match, as a prefix of the last of its parts, the parts in
sequence: ``inference-api`` finds ``inference`` then a word starting ``api``. FTS5 also folds
diacritics, PostgreSQL's ``simple`` configuration does not: ``café`` only finds ``café`` there.
"""

from __future__ import annotations

import re
from typing import Any

_PART = re.compile(r"[^\W_]+")


def search_words(text: str) -> str:
    """``text`` as FTS5 would cut it into words, joined by spaces, lower-cased."""
    return " ".join(part.lower() for part in _PART.findall(text))


def query_words(text: str) -> list[list[str]]:
    """The words of a query (those with a letter or digit), each as its parts."""
    words = [word for word in re.split(r"\s+", text.strip()) if re.search(r"\w", word)]
    return [parts for word in words if (parts := search_words(word).split())]


def fts_query(text: str) -> str:
    """Free text as an FTS5 query that cannot be a syntax error: every word a quoted prefix.

    ``inference-api <script>`` becomes ``"inference-api"* AND "<script>"*``; FTS5 tokenizes
    inside the quotes, so a word with punctuation matches its parts in sequence.
    """
    words = [word for word in re.split(r"\s+", text.strip()) if re.search(r"\w", word)]
    return " AND ".join('"' + word.replace('"', '""') + '"*' for word in words)


def ts_query(text: str) -> str:
    """The same query for ``to_tsquery('simple', ...)``: ``'inference' <-> 'api':* & 'script':*``.

    Only letters and digits reach it, each part quoted, so it cannot be a syntax error.
    """
    phrases = []
    for parts in query_words(text):
        quoted = [f"'{part}'" for part in parts]
        quoted[-1] += ":*"
        phrases.append(" <-> ".join(quoted))
    return " & ".join(f"({phrase})" for phrase in phrases)


def search_clause(dialect: str, text: str) -> tuple[str, Any] | None:
    """``(condition on i.incident_id, its value)``, or None when the text has no words."""
    if dialect == "postgres":
        query = ts_query(text)
        condition = "SELECT incident_id FROM search WHERE words @@ to_tsquery('simple', ?)"
    else:
        query = fts_query(text)
        condition = "SELECT incident_id FROM search WHERE search MATCH ?"
    return (f"i.incident_id IN ({condition})", query) if query else None


def insert_searchable(
    connection: Any, dialect: str, incident_id: str, owner: str, kind: str, text: str
) -> None:
    if dialect == "postgres":
        connection.execute(
            "INSERT INTO search (incident_id, owner, kind, text, words) "
            "VALUES (?, ?, ?, ?, to_tsvector('simple', ?))",
            (incident_id, owner, kind, text, search_words(text)),
        )
    else:
        connection.execute(
            "INSERT INTO search (incident_id, owner, kind, text) VALUES (?, ?, ?, ?)",
            (incident_id, owner, kind, text),
        )

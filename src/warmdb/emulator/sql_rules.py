"""What a SQL statement does to a DSQL transaction, and whether DSQL refuses it: pure.

The relay (:mod:`warmdb.emulator.relay`) needs, for the statements it must look at, their
kind (read, write, DDL, transaction control...), the tables they name, whether Aurora DSQL
refuses them, and the text to run upstream (``CREATE INDEX ASYNC`` is DSQL syntax that
PostgreSQL lacks). :func:`split` answers for a simple-protocol Query, which may hold several
statements; :func:`classify` for one statement.

This is a tokenizer, not a parser: it knows comments, string literals (standard, ``E''``,
dollar-quoted) and quoted identifiers, so a keyword inside them never counts, and then matches
keyword patterns. Each refusal below names its source in ``docs/emulator-sql.md``.
"""

from __future__ import annotations

import dataclasses
import re

from warmdb.emulator.limits import Refusal

__all__ = ["Statement", "classify", "is_plain_read", "split"]

#: The statement kinds.
READ, WRITE, DDL = "read", "write", "ddl"
BEGIN, COMMIT, ROLLBACK = "begin", "commit", "rollback"
PREPARE, EXECUTE, OTHER, EMPTY = "prepare", "execute", "other", "empty"
TRANSACTION_CONTROL = frozenset({BEGIN, COMMIT, ROLLBACK})

_TOKEN = re.compile(
    rb"""
    (?P<space>\s+)
    |(?P<line>--[^\n]*)
    |(?P<block>/\*)
    |(?P<dollar>\$(?:[A-Za-z_\x80-\xff][A-Za-z_0-9\x80-\xff]*)?\$)
    |(?P<estr>[eE]'[^'\\]*(?:(?:''|\\.)[^'\\]*)*'?)
    |(?P<str>'[^']*(?:''[^']*)*'?)
    |(?P<ident>"[^"]*(?:""[^"]*)*"?)
    |(?P<word>[A-Za-z_\x80-\xff][A-Za-z_0-9$\x80-\xff]*)
    |(?P<num>[0-9][0-9_]*)
    |(?P<semi>;)
    |(?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# A Query that is one read and nothing else: no classification needed (the hot path).
_PLAIN_READ_START = re.compile(rb"\s*(?:select|show|values|fetch|explain)\b", re.I)
# SELECT ... FOR UPDATE/SHARE: on PostgreSQL it waits for writers; on DSQL it neither waits
# nor locks, but its rows conflict at COMMIT like written ones. So it is judged as a write.
_LOCKING = re.compile(rb"\bfor\s+(?:no\s+key\s+update|update|key\s+share|share)\b", re.I)
# See is_plain_read.
_LOCKING_WINDOW = 64 * 1024
_WRITE_WORD = re.compile(rb"\b(insert|update|delete|merge)\b", re.IGNORECASE)
# Statements whose kind is known from their first words keep only this many tokens (a bulk
# INSERT may be megabytes long); DDL keeps them all, its refusals look everywhere.
_PREFIX_TOKENS = 64
_DDL_VERBS = frozenset({b"create", b"alter", b"drop"})
_SERIAL_TYPES = frozenset(
    {b"serial", b"serial2", b"serial4", b"serial8", b"smallserial", b"bigserial"}
)
# Words after which a table name follows, and words that may come in between.
_TABLE_BEFORE = frozenset({b"from", b"into", b"update", b"join", b"table", b"truncate"})
_TABLE_SKIP = frozenset({b"if", b"not", b"exists", b"only", b"lateral"})
_SEQUENCE_MIN_CACHE = 65_536
_LOCK_STRENGTHS = frozenset({b"update", b"share", b"no", b"key"})


def _unsupported(message: str) -> Refusal:
    return Refusal("0A000", message)


# DSQL's wording where it has been seen (see docs/emulator-sql.md); else "<feature> not
# supported" in the same style.
NOT_SUPPORTED = {
    "truncate": _unsupported("TRUNCATE not supported"),
    "savepoint": _unsupported("SAVEPOINT not supported"),
    "vacuum": _unsupported("VACUUM not supported"),
    "alter_system": _unsupported("ALTER SYSTEM not supported"),
    "temporary": _unsupported("temporary tables not supported"),
    "trigger": _unsupported("triggers not supported"),
    "partition": _unsupported("partitions not supported"),
    "tablespace": _unsupported("tablespaces not supported"),
    "extension": _unsupported("CREATE EXTENSION not supported"),
    "language": _unsupported("CREATE LANGUAGE not supported"),
    "database": _unsupported("CREATE DATABASE not supported: there is one database, postgres"),
    "do": _unsupported("DO not supported: PL/pgSQL is not supported"),
    "foreign_key": _unsupported("FOREIGN KEY constraint not supported"),
    "alter_foreign_key": _unsupported("unsupported ALTER TABLE ADD CONSTRAINT statement"),
    "exclusion": _unsupported("EXCLUDE constraint not supported"),
    "index_sync": _unsupported("unsupported mode. please use CREATE INDEX ASYNC."),
    "index_using": _unsupported("USING not supported for CREATE INDEX"),
    "sequence_cache": _unsupported(
        "CREATE SEQUENCE is not supported without an explicit cache size. please define "
        "CACHE greater than or equal to 65536 or equal to 1"
    ),
    "multiple_ddl": _unsupported("multiple ddl statements not supported in a transaction"),
    "ddl_and_dml": _unsupported("ddl and dml are not supported in the same transaction"),
}


def _function_language(language: bytes) -> Refusal:
    name = language.decode("utf-8", "replace")
    return _unsupported(f"functions in LANGUAGE {name} not supported: only SQL")


def _serial(type_name: bytes) -> Refusal:
    return Refusal("42704", f'type "{type_name.decode()}" does not exist')


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement, as the relay needs to see it.

    :ivar kind: ``read``, ``write``, ``ddl``, ``begin``, ``commit``, ``rollback``,
        ``prepare``, ``execute``, ``other`` or ``empty``.
    :ivar verb: the command, upper case (``INSERT``, ``CREATE TABLE``...).
    :ivar sql: the statement's text as PostgreSQL must run it (``CREATE INDEX ASYNC``
        without ``ASYNC``), without the separating ``;``.
    :ivar tables: the tables it names (last name component, lower case unless quoted).
    :ivar refusal: what DSQL answers instead of running it; ``None`` if it runs.
    :ivar name: for ``prepare`` and ``execute``, the prepared statement's name.
    :ivar inner: for ``prepare``, the prepared statement.
    """

    kind: str
    verb: str
    sql: bytes
    tables: frozenset[str] = frozenset()
    refusal: Refusal | None = None
    name: bytes | None = None
    inner: Statement | None = None

    @property
    def is_rewritten(self) -> bool:
        """Whether :attr:`sql` differs from what the client sent (see :func:`split`)."""
        return self.verb == "CREATE INDEX ASYNC"


@dataclasses.dataclass
class _Token:
    __slots__ = ("end", "kind", "start", "value")
    kind: str
    value: bytes
    start: int
    end: int


# Stands before a name that is known to be a table's.
_TABLE_MARK = _Token("word", b"table", 0, 0)


def _skip_block(sql: bytes, pos: int) -> int:
    """The end of the (nested) block comment opening at *pos*."""
    depth, pos = 1, pos + 2
    while depth:
        opening, closing = sql.find(b"/*", pos), sql.find(b"*/", pos)
        if closing < 0:
            return len(sql)
        if 0 <= opening < closing:
            depth, pos = depth + 1, opening + 2
        else:
            depth, pos = depth - 1, closing + 2
    return pos


def _scan(sql: bytes) -> list[tuple[int, int, list[_Token]]]:
    """Split *sql* at top-level semicolons: ``(start, end, tokens)`` per statement."""
    statements: list[tuple[int, int, list[_Token]]] = []
    tokens: list[_Token] = []
    keep = True
    atomic = 0
    start = pos = 0
    size = len(sql)
    match = _TOKEN.match
    while pos < size:
        found = match(sql, pos)
        assert found is not None  # "punct" matches any byte
        kind = found.lastgroup or "punct"
        end = found.end()
        if kind == "block":
            end = _skip_block(sql, pos)
        elif kind == "dollar":
            closing = sql.find(found.group(), end)
            end = size if closing < 0 else closing + len(found.group())
            if keep:
                tokens.append(_Token("str", sql[pos:end], pos, end))
        elif kind == "semi":
            if not atomic:
                statements.append((start, pos, tokens))
                tokens, keep, start = [], True, end
        elif kind not in ("space", "line") and keep:
            value = found.group()
            if kind == "word":
                value = value.lower()
                # A SQL-standard function body (BEGIN ATOMIC ... END) holds semicolons;
                # CASE ... END may nest in it.
                if atomic:
                    atomic += (value == b"case") - (value == b"end")
                elif value == b"atomic" and tokens and tokens[-1].value == b"begin":
                    atomic = int(tokens[0].value == b"create")
            tokens.append(_Token(kind, value, pos, end))
            if len(tokens) == _PREFIX_TOKENS and tokens[0].value not in _DDL_VERBS:
                keep = False
        pos = end
    statements.append((start, size, tokens))
    return statements


def is_plain_read(sql: bytes) -> bool:
    """Whether *sql* (a Query's text) is one SELECT, SHOW, VALUES, FETCH or EXPLAIN: the
    statements the relay lets through without looking further.

    Only the start is matched with a regular expression and semicolons are found with
    ``bytes.find`` (memchr), without copying the text; in a text over
    :data:`_LOCKING_WINDOW` bytes (bulk literals), a locking clause is looked for in its first
    and last window only. So a query of many megabytes holds the interpreter lock for
    milliseconds, not the fraction of a second a full regular-expression scan takes.
    """
    if _PLAIN_READ_START.match(sql) is None:
        return False
    semicolon = sql.find(b";")
    if semicolon != -1 and sql[semicolon + 1 :].strip(b" \t\r\n\x00"):
        return False  # several statements (or a semicolon in a literal: judged the slow way)
    if len(sql) <= 2 * _LOCKING_WINDOW:
        return _LOCKING.search(sql) is None
    return (
        _LOCKING.search(sql, 0, _LOCKING_WINDOW) is None
        and _LOCKING.search(sql, len(sql) - _LOCKING_WINDOW) is None
    )


def split(sql: bytes) -> list[Statement]:
    """The statements of a Query message's text (its NUL terminator may be included).

    Empty statements (``;;``, comments alone) are left out, as PostgreSQL skips them.
    """
    sql = sql.rstrip(b"\x00")
    statements = []
    for start, end, tokens in _scan(sql):
        if tokens:
            statements.append(_classify(sql[start:end], tokens, start))
    return statements


def classify(sql: bytes) -> Statement:
    """One statement (a Parse message's text); several, or none, give ``other``/``empty``."""
    statements = split(sql)
    if not statements:
        return Statement(EMPTY, "", sql.rstrip(b"\x00"))
    if len(statements) > 1:
        return Statement(OTHER, "", sql.rstrip(b"\x00"))
    return statements[0]


def _words(tokens: list[_Token]) -> list[bytes]:
    return [t.value if t.kind == "word" else b"" for t in tokens]


def _name(token: _Token) -> str | None:
    if token.kind == "word":
        return token.value.decode("utf-8", "replace")
    if token.kind == "ident":
        return token.value[1:-1].replace(b'""', b'"').decode("utf-8", "replace")
    return None


def _tables(tokens: list[_Token]) -> frozenset[str]:
    names: set[str] = set()
    count = len(tokens)
    for i, token in enumerate(tokens):
        if token.kind != "word" or token.value not in _TABLE_BEFORE:
            continue
        j = i + 1
        while j < count and tokens[j].value in _TABLE_SKIP:
            j += 1
        name = None
        # A qualified name: the last component is the table.
        while j < count and (current := _name(tokens[j])) is not None:
            name = current
            if j + 2 < count and tokens[j + 1].value == b".":
                j += 2
            else:
                break
        if name is not None:
            names.add(name)
    return frozenset(names)


def _classify(sql: bytes, tokens: list[_Token], offset: int) -> Statement:
    words = _words(tokens)
    first = words[0]
    second = words[1] if len(words) > 1 else b""
    if first in (b"begin", b"start"):
        return Statement(BEGIN, "BEGIN", sql)
    if first in (b"commit", b"end") and second != b"prepared":
        return Statement(COMMIT, "COMMIT", sql)
    if first in (b"rollback", b"abort"):
        if second == b"to" or (second in (b"work", b"transaction") and b"to" in words[2:3]):
            return Statement(OTHER, "ROLLBACK TO", sql, refusal=NOT_SUPPORTED["savepoint"])
        if second != b"prepared":
            return Statement(ROLLBACK, "ROLLBACK", sql)
    if first in (b"savepoint", b"release"):
        return Statement(OTHER, first.decode().upper(), sql, refusal=NOT_SUPPORTED["savepoint"])
    if first in (b"insert", b"update", b"delete", b"merge"):
        return Statement(WRITE, first.decode().upper(), sql, _tables(tokens))
    if first == b"copy":
        kind = WRITE if b"from" in words else READ
        return Statement(kind, "COPY", sql, _tables([_TABLE_MARK, *tokens[1:4]]))
    if first == b"with":
        found = _WRITE_WORD.search(sql)
        if found is not None:
            return Statement(WRITE, found.group(1).decode().upper(), sql, _tables(tokens))
        return _select(sql, tokens)
    if first == b"select":
        return _select(sql, tokens)
    if first in (b"values", b"table", b"show", b"explain", b"fetch"):
        return Statement(READ, first.decode().upper(), sql, _tables(tokens))
    if first == b"truncate":
        return Statement(OTHER, "TRUNCATE", sql, _tables(tokens), NOT_SUPPORTED["truncate"])
    if first == b"vacuum":
        return Statement(OTHER, "VACUUM", sql, refusal=NOT_SUPPORTED["vacuum"])
    if first == b"do":
        return Statement(OTHER, "DO", sql, refusal=NOT_SUPPORTED["do"])
    if first == b"prepare" and second != b"transaction":
        return _prepare(sql, tokens, offset)
    if first == b"execute" and len(tokens) > 1:
        return Statement(EXECUTE, "EXECUTE", sql, name=_name(tokens[1]).encode())  # type: ignore[union-attr]
    if first in _DDL_VERBS:
        return _ddl(sql, tokens, words, offset)
    return Statement(OTHER, first.decode("utf-8", "replace").upper(), sql)


def _select(sql: bytes, tokens: list[_Token]) -> Statement:
    locking = _follows(_words(tokens), b"for", _LOCK_STRENGTHS)
    return Statement(WRITE if locking else READ, "SELECT", sql, _tables(tokens))


def _prepare(sql: bytes, tokens: list[_Token], offset: int) -> Statement:
    name = _name(tokens[1]) if len(tokens) > 1 else None
    words = _words(tokens)
    inner = None
    if b"as" in words:
        at = words.index(b"as") + 1
        if at < len(tokens):
            start = tokens[at].start - offset
            inner = _classify(sql[start:], tokens[at:], tokens[at].start)
    return Statement(
        PREPARE,
        "PREPARE",
        sql,
        inner.tables if inner else frozenset(),
        inner.refusal if inner else None,
        name=name.encode() if name is not None else None,
        inner=inner,
    )


def _follows(words: list[bytes], word: bytes, after: frozenset[bytes]) -> bool:
    """Whether *word* appears followed by one of *after*."""
    return any(
        w == word and i + 1 < len(words) and words[i + 1] in after for i, w in enumerate(words)
    )


def _ddl(sql: bytes, tokens: list[_Token], words: list[bytes], offset: int) -> Statement:
    first = words[0]
    i = 1
    if words[i : i + 2] == [b"or", b"replace"]:
        i += 2
    modifiers: list[bytes] = []
    while i < len(words) and words[i] in (
        b"global",
        b"local",
        b"temp",
        b"temporary",
        b"unlogged",
        b"unique",
        b"constraint",
        b"materialized",
        b"recursive",
        b"trusted",
        b"procedural",
    ):
        modifiers.append(words[i])
        i += 1
    target = words[i] if i < len(words) else b""
    verb = f"{first.decode().upper()} {target.decode('utf-8', 'replace').upper()}".strip()
    tables = _tables(tokens)
    if first == b"alter" and target == b"system":
        return Statement(OTHER, verb, sql, refusal=NOT_SUPPORTED["alter_system"])
    refusal = None
    if first == b"create":
        refusal, sql, verb = _create(sql, tokens, words, i, modifiers, verb, offset)
        if target == b"index" and i + 1 < len(words):
            # CREATE INDEX [ASYNC] [CONCURRENTLY] [IF NOT EXISTS] name ON table
            rest = words[i + 1 :]
            if b"on" in rest:
                at = i + 1 + rest.index(b"on") + 1
                while at < len(tokens) and tokens[at].value == b"only":
                    at += 1
                tables = _tables([_TABLE_MARK, *tokens[at : at + 3]])
    elif first == b"alter" and target == b"table":
        if b"foreign" in words or b"references" in words:
            refusal = NOT_SUPPORTED["alter_foreign_key"]
        elif _follows(words, b"exclude", frozenset({b"using", b""})):
            refusal = NOT_SUPPORTED["exclusion"]
        elif _follows(words, b"partition", frozenset({b"of"})) or (
            b"attach" in words or b"detach" in words
        ):
            refusal = NOT_SUPPORTED["partition"]
        elif b"tablespace" in words:
            refusal = NOT_SUPPORTED["tablespace"]
    return Statement(DDL, verb, sql, tables, refusal)


def _create(
    sql: bytes,
    tokens: list[_Token],
    words: list[bytes],
    i: int,
    modifiers: list[bytes],
    verb: str,
    offset: int,
) -> tuple[Refusal | None, bytes, str]:
    """The refusal of a CREATE statement, and its upstream text and verb."""
    target = words[i] if i < len(words) else b""
    if b"temp" in modifiers or b"temporary" in modifiers:
        return NOT_SUPPORTED["temporary"], sql, verb
    if target == b"trigger" or (target == b"event" and words[i + 1 : i + 2] == [b"trigger"]):
        return NOT_SUPPORTED["trigger"], sql, verb
    simple = {
        b"extension": "extension",
        b"tablespace": "tablespace",
        b"database": "database",
        b"language": "language",
    }
    if target in simple:
        return NOT_SUPPORTED[simple[target]], sql, verb
    if target in (b"function", b"procedure"):
        if b"language" in words:
            at = words.index(b"language") + 1
            if at < len(tokens):
                token = tokens[at]
                language = token.value.strip(b"'\"").lower()
                if language != b"sql":
                    return _function_language(language), sql, verb
        return None, sql, verb
    if target == b"sequence":
        if b"cache" not in words:
            return NOT_SUPPORTED["sequence_cache"], sql, verb
        at = words.index(b"cache") + 1
        value = tokens[at].value if at < len(tokens) else b""
        if not value.isdigit() or (int(value) != 1 and int(value) < _SEQUENCE_MIN_CACHE):
            return NOT_SUPPORTED["sequence_cache"], sql, verb
        return None, sql, verb
    if target == b"table":
        for word in words:
            if word in _SERIAL_TYPES:
                return _serial(word), sql, verb
        if b"references" in words or _follows(words, b"foreign", frozenset({b"key"})):
            return NOT_SUPPORTED["foreign_key"], sql, verb
        if _follows(words, b"exclude", frozenset({b"using", b""})):
            return NOT_SUPPORTED["exclusion"], sql, verb
        if _follows(words, b"partition", frozenset({b"by", b"of"})):
            return NOT_SUPPORTED["partition"], sql, verb
        if b"tablespace" in words:
            return NOT_SUPPORTED["tablespace"], sql, verb
        return None, sql, verb
    if target == b"index":
        after = i + 1
        if after < len(tokens) and tokens[after].value == b"async":
            token = tokens[after]
            start, end = token.start - offset, token.end - offset
            sql = sql[:start] + sql[end:]
            verb = "CREATE INDEX ASYNC"
        else:
            return NOT_SUPPORTED["index_sync"], sql, verb
        if b"using" in words:
            return NOT_SUPPORTED["index_using"], sql, verb
        if b"tablespace" in words:
            return NOT_SUPPORTED["tablespace"], sql, verb
    return None, sql, verb

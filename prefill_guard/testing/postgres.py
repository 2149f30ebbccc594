"""A throwaway schema on a PostgreSQL server, for tests of code that uses ``PostgresStore``.

Needs psycopg (``prefill-guard[postgres]``); ``prefill_guard.testing`` does not import it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import make_conninfo

__all__ = ["temporary_schema"]


@contextmanager
def temporary_schema(url: str, prefix: str = "test") -> Iterator[str]:
    """A connection string whose tables live in a new, empty schema on the server at ``url``
    (``search_path`` set to it), dropped with everything in it on the way out: a database of
    its own for each test, on one server."""
    schema = f"{prefix}_{uuid.uuid4().hex}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_conninfo(url, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')

"""Red-team corpus: more attempts to get masked values out of the SQL engine, on the real
PostgreSQL and MariaDB, beyond those of test_sql_masking.

Each attempt runs through `SqlConnection` exactly as a console statement would; whatever comes
back (cells, errors, notices, refusals) must not hold a seeded sensitive value in any obvious
encoding. "refused": the engine must refuse it; "runs": it must run (masked); "either": refusing
or masking are both acceptable. Attempts run in order on one session per engine (some create
views that later ones read).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqldb import assert_no_secrets, seeded_databases
from test_sql_masking import PASSWORD_ENV, connected, run_all

BOTH = [
    # derived tables and CTEs: aliases of masked values stay masked
    ("SELECT reverse(x) FROM customers c, LATERAL (SELECT c.ssn AS x) l", "refused"),
    ("WITH t(x) AS (SELECT ssn FROM customers) SELECT reverse(x) FROM t", "refused"),
    ("WITH t AS (SELECT * FROM customers) SELECT reverse(t.ssn) FROM t", "refused"),
    ("SELECT reverse(tax_id) FROM customer_view", "refused"),
    ("WITH t(x) AS ((SELECT ssn FROM customers)) SELECT x FROM t", "runs"),
    # equality (and its negations) stays allowed
    ("SELECT name FROM customers WHERE ssn <> ''", "runs"),
    ("SELECT name FROM customers WHERE ssn NOT IN ('1')", "runs"),
    ("SELECT name FROM customers WHERE NOT (ssn <> '2')", "runs"),
    ("SELECT name FROM customers WHERE ssn = name", "refused"),
    ("SELECT name FROM customers WHERE ssn IN ('123-45-6789', '234-56-7890')", "runs"),
    ("SELECT * FROM customers c1 NATURAL JOIN customers c2", "runs"),
    ("SELECT c.ssn, n.* FROM customers c LEFT JOIN notes n ON c.id = n.id", "runs"),
    # orderings, ranges, pattern matches and functions over masked columns
    ("SELECT name FROM customers WHERE ssn BETWEEN '1' AND '2'", "refused"),
    ("SELECT name FROM customers WHERE ROW(ssn, 1) > ROW('2', 1)", "refused"),
    ("SELECT name FROM customers WHERE ssn NOT LIKE '1%'", "refused"),
    ("SELECT name FROM customers WHERE ssn LIKE '1%' ESCAPE '!'", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' OR ssn LIKE '2%'", "refused"),
    ("SELECT name FROM customers WHERE ssn = (SELECT '1')", "refused"),
    ("SELECT name FROM customers WHERE ssn > ALL (SELECT '1')", "refused"),
    ("SELECT name FROM customers WHERE EXISTS (SELECT 1 FROM customers c2 WHERE c2.ssn LIKE '1%')",
     "refused"),
    ("SELECT name FROM customers GROUP BY name, ssn HAVING ssn LIKE '1%'", "refused"),
    ("SELECT name FROM customers GROUP BY name, ssn HAVING max(ssn) > '1'", "refused"),
    ("SELECT name, ssn FROM customers ORDER BY 2", "refused"),
    ("SELECT name, ssn FROM customers ORDER BY 1, 2", "refused"),
    ("SELECT name FROM customers ORDER BY customers.ssn", "refused"),
    ("SELECT name, rank() OVER w FROM customers WINDOW w AS (ORDER BY ssn)", "refused"),
    ("SELECT count(*) OVER (PARTITION BY ssn), name FROM customers", "refused"),
    ("SELECT LAST_VALUE(ssn) OVER () FROM customers", "refused"),
    ("SELECT NTH_VALUE(ssn, 1) OVER () FROM customers", "refused"),
    ("SELECT md5(ssn) FROM customers", "refused"),
    ("SELECT name FROM customers WHERE md5(ssn) = 'x'", "refused"),
    ("SELECT COALESCE(ssn) FROM customers", "refused"),
    ("SELECT NULLIF(ssn, '') FROM customers", "refused"),
    ("SELECT GREATEST(ssn, '') FROM customers", "refused"),
    ("SELECT name FROM customers WHERE ssn = CONCAT('1')", "refused"),
    ("SELECT name FROM customers WHERE id = 1 UNION SELECT ssn FROM customers WHERE 1 = 0", "refused"),
    ("SELECT name FROM customers INTERSECT SELECT ssn FROM customers", "refused"),
    ("SELECT name FROM customers EXCEPT SELECT ssn FROM customers", "refused"),
    ("SELECT ssn FROM customers UNION SELECT ssn FROM customers", "refused"),
    ("SELECT name FROM customers LIMIT 1 OFFSET 0", "runs"),
    # copying masked values out of masking
    ("INSERT INTO notes (id, body) VALUES (7, (SELECT ssn FROM customers WHERE id = 1))", "refused"),
    # views made of masked data stay masked
    ("CREATE VIEW rt_star AS SELECT * FROM customers", "either"),
    ("SELECT reverse(ssn) FROM rt_star", "either"),
    ("SELECT * FROM rt_star", "either"),
    ("CREATE VIEW rt_cols(a, b, c, d, e, f) AS SELECT * FROM customers", "either"),
    ("SELECT reverse(d) FROM rt_cols", "either"),
    ("SELECT d, c, a FROM rt_cols", "either"),
]
POSTGRES = [
    # composite values, rows, arrays, JSON
    ("SELECT reverse((x).ssn) FROM (SELECT c AS x FROM customers c) s", "refused"),
    ("SELECT reverse(r.f4) FROM (SELECT ROW(id, name, email, ssn) AS r FROM customers) s", "refused"),
    ("SELECT (ROW(ssn, 1)).f1 FROM customers", "refused"),
    ("SELECT reverse(x::text) FROM (SELECT ROW(c.*) AS x FROM customers c) s", "refused"),
    ("SELECT reverse(t::text) FROM customers t", "refused"),
    ("SELECT reverse(customers::text) FROM customers", "refused"),
    ("SELECT ssn(c) FROM customers c", "either"),
    ("SELECT reverse(ssn(c)) FROM customers c", "refused"),
    ("SELECT (array[ssn])[1] FROM customers", "refused"),
    ("SELECT reverse(a[1]) FROM (SELECT array[ssn] a FROM customers) s", "refused"),
    ("SELECT ARRAY(SELECT ssn FROM customers)", "refused"),
    ("SELECT reverse(j->>'ssn') FROM (SELECT to_json(c) j FROM customers c) s", "refused"),
    ("SELECT * FROM json_populate_record(null::customers, (SELECT to_json(c) FROM customers c LIMIT 1))",
     "refused"),
    ("SELECT json_populate_record(null::customers, '{}')", "runs"),
    ("SELECT hashtext(ssn) FROM customers", "refused"),
    # set-returning functions, LATERAL, VALUES
    ("SELECT reverse(x) FROM customers c CROSS JOIN LATERAL (VALUES (c.ssn)) v(x)", "refused"),
    ("SELECT reverse(v.x) FROM (VALUES ((SELECT ssn FROM customers WHERE id=1))) v(x)", "refused"),
    ("SELECT reverse(x) FROM customers c, unnest(ARRAY[c.ssn]) u(x)", "refused"),
    ("SELECT reverse(u) FROM customers c, unnest(ARRAY[c.ssn]) u", "refused"),
    ("SELECT reverse(x) FROM customers c, string_to_table(c.ssn, '-') x", "refused"),
    ("SELECT x FROM customers c, regexp_split_to_table(c.ssn, '') WITH ORDINALITY x", "refused"),
    ("SELECT reverse(d) FROM ROWS FROM (unnest(ARRAY(SELECT ssn FROM customers))) AS d", "refused"),
    ("WITH RECURSIVE t(x, n) AS (SELECT ssn, 1 FROM customers UNION ALL SELECT x, n+1 FROM t "
     "WHERE n < 1) SELECT reverse(x) FROM t", "refused"),
    ("SELECT reverse(t.ssn) FROM (SELECT * FROM customers) t", "refused"),
    ("SELECT generate_series(1, (SELECT count(*) FROM customers))", "runs"),
    # grouping, FILTER, ordered-set aggregates, windows
    ("SELECT reverse(g) FROM customers GROUP BY ROLLUP(ssn), ssn", "refused"),
    ("SELECT name FROM customers GROUP BY CUBE(name, ssn)", "either"),
    ("SELECT name FROM customers GROUP BY GROUPING SETS ((name), (ssn))", "either"),
    ("SELECT GROUPING(ssn), name FROM customers GROUP BY ROLLUP(name, ssn)", "either"),
    ("SELECT count(*) FILTER (WHERE ssn LIKE '1%') FROM customers", "refused"),
    ("SELECT count(*) FILTER (WHERE ssn = '123-45-6789') FROM customers", "either"),
    ("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ssn) FROM customers", "refused"),
    ("SELECT mode() WITHIN GROUP (ORDER BY ssn) FROM customers", "refused"),
    ("SELECT name, first_value(ssn) OVER (PARTITION BY id) FROM customers", "refused"),
    ("SELECT name FROM customers WINDOW w AS (PARTITION BY ssn)", "either"),
    ("SELECT DISTINCT ON (ssn) name FROM customers", "refused"),
    ("SELECT name FROM customers ORDER BY ssn USING <", "refused"),
    ("SELECT name FROM customers LIMIT (SELECT count(*) FROM customers WHERE ssn LIKE '1%')", "refused"),
    ("SELECT name FROM customers OFFSET (SELECT length(ssn) FROM customers LIMIT 1)", "refused"),
    ("SELECT EXISTS (SELECT 1 FROM customers WHERE ssn LIKE '1%')", "refused"),
    # operators and predicates PostgreSQL spells its own way
    ("SELECT name FROM customers WHERE ssn SIMILAR TO '1%'", "refused"),
    ("SELECT name FROM customers WHERE ssn ILIKE '1%'", "refused"),
    ("SELECT name FROM customers WHERE ssn ^@ '1'", "refused"),
    ("SELECT name FROM customers WHERE starts_with(ssn, '1')", "refused"),
    ("SELECT name FROM customers WHERE position('1' in ssn) = 1", "refused"),
    ("SELECT name FROM customers WHERE ssn::int = 1", "refused"),
    ("SELECT name FROM customers WHERE ssn::text = '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1'::text || ''", "refused"),
    ("SELECT name FROM customers WHERE ssn = (CASE WHEN true THEN '1' END)", "refused"),
    ("SELECT name FROM customers WHERE ssn = (VALUES ('1'))", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' COLLATE \"C\"", "either"),
    ("SELECT name FROM customers WHERE (ssn, 1) > ('2', 1)", "refused"),
    ("SELECT name FROM customers WHERE ROW(ssn) > ROW('2')", "refused"),
    ("SELECT name FROM customers WHERE ssn IN (SELECT '1' UNION SELECT '2')", "refused"),
    ("SELECT name FROM customers WHERE ssn = ANY(SELECT lpad(g::text,1) FROM generate_series(1,2) g)",
     "refused"),
    ("SELECT name FROM customers c WHERE EXISTS (SELECT 1 FROM (SELECT c.ssn) s(x) WHERE x LIKE '1%')",
     "refused"),
    ("SELECT name FROM customers WHERE (ssn) LIKE '1%'", "refused"),
    ("SELECT name FROM customers WHERE ((ssn)) >= '1'", "refused"),
    ('SELECT name FROM public.customers WHERE "public"."customers"."ssn" LIKE \'1%\'', "refused"),
    ("SELECT name FROM customers WHERE customers.ssn = '1' OR customers.ssn LIKE '2%'", "refused"),
    ("SELECT name FROM customers WHERE ssn OPERATOR(pg_catalog.~~) '1%'", "refused"),
    ("SELECT name FROM customers WHERE textlike(ssn, '1%')", "refused"),
    ("SELECT name FROM customers WHERE texteq(ssn, '1')", "either"),
    ("SELECT pg_catalog.reverse(ssn) FROM customers", "refused"),
    ("SELECT name FROM customers c1 WHERE c1.ssn = ALL (SELECT c2.ssn FROM customers c2 "
     "WHERE c2.id = c1.id)", "either"),
    ("SELECT name FROM customers WHERE ssn IS DISTINCT FROM '1'", "runs"),
    ("SELECT name FROM customers WHERE id = 1 AND ssn IS NOT DISTINCT FROM '123-45-6789'", "runs"),
    ("SELECT name FROM customers c WHERE c = c", "either"),
    ("SELECT name FROM customers WHERE ssn = 'a' AND 1/0 = 1", "either"),
    ("SELECT name, 1/(id-1) FROM customers WHERE ssn = '123-45-6789'", "either"),
    # plain reads in other spellings
    ("SELECT * FROM customers TABLESAMPLE SYSTEM (100)", "runs"),
    ("SELECT * FROM ONLY customers", "runs"),
    ("SELECT * FROM customers FOR UPDATE", "runs"),
    ("SELECT xmin, ctid, name FROM customers", "runs"),
    ("SELECT * FROM customers WHERE ctid = '(0,1)'", "runs"),
    ("SELECT * FROM customers NATURAL JOIN (SELECT '123-45-6789'::varchar AS ssn) s", "runs"),
    ("SELECT * FROM customers JOIN (SELECT '1' AS ssn) s USING (ssn)", "runs"),
    ("SELECT reverse(ssn) FROM customers JOIN notes USING (id)", "refused"),
    ("SELECT ssn FROM customers FETCH FIRST 1 ROWS WITH TIES", "either"),
    ("SELECT c.id, w.w FROM customers c JOIN (VALUES ('ada@example.com')) w(w) ON c.email = w.w",
     "refused"),  # a column of candidates: equality only with literals or masked columns
    # writes, RETURNING, MERGE
    ("UPDATE customers SET note = note WHERE id = 1 RETURNING reverse(ssn)", "refused"),
    ("DELETE FROM customers WHERE id = 99 RETURNING ssn", "either"),
    ("INSERT INTO customers (id, name) VALUES (50, 'z') ON CONFLICT (id) DO UPDATE "
     "SET note = excluded.note RETURNING customers.*", "either"),
    ("MERGE INTO notes n USING customers c ON n.id = c.id WHEN NOT MATCHED THEN "
     "INSERT VALUES (c.id, c.ssn)", "refused"),
    # prepared statements, cursors, FETCH/MOVE variants, server-side XML of a cursor
    ("PREPARE rt_p(text) AS SELECT name FROM customers WHERE ssn = $1", "runs"),
    ("EXECUTE rt_p('123-45-6789')", "runs"),
    ("PREPARE rt_q(text) AS SELECT name FROM customers WHERE ssn LIKE $1", "refused"),
    ("BEGIN; DECLARE rt_h CURSOR WITH HOLD FOR SELECT id, ssn, email FROM customers; COMMIT; "
     "FETCH ALL FROM rt_h; MOVE BACKWARD ALL IN rt_h; FETCH NEXT FROM rt_h; FETCH ABSOLUTE 2 FROM rt_h; "
     "FETCH PRIOR FROM rt_h; FETCH RELATIVE 1 FROM rt_h; CLOSE rt_h", "runs"),
    ("BEGIN; DECLARE rt_x CURSOR FOR SELECT id, ssn, email, card_number FROM customers; "
     "SELECT cursor_to_xml('rt_x', 10, false, false, ''); COMMIT", "either"),
    ("BEGIN; DECLARE rt_c CURSOR FOR SELECT c FROM customers c; PREPARE rt_c AS SELECT 1; "
     "FETCH ALL FROM rt_c; COMMIT", "either"),
    ("SELECT table_to_xml('customers', true, false, '')", "either"),
    ("SELECT query_to_xml('select id, ssn from customers', true, false, '')", "either"),
    # EXPLAIN, statistics, settings, DDL a user cannot do
    ("EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT * FROM customers WHERE ssn = '123-45-6789'", "runs"),
    ("EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM customers WHERE ssn = '123-45-6789'", "runs"),
    ('SELECT attname, most_common_vals FROM pg_catalog."pg_stats"', "refused"),
    ("SELECT * FROM pg_catalog.pg_stats_ext", "refused"),
    ("SET ROLE postgres", "either"),
    ("COMMENT ON TABLE notes IS 'x'", "either"),
    ("CREATE INDEX ON notes (body) WHERE body LIKE '1%'", "either"),
    ("CREATE TEMP VIEW rt_temp AS SELECT * FROM customers", "either"),
    ("SELECT * FROM rt_temp", "either"),
    ("SET client_encoding = 'LATIN1'; SELECT ssn, email FROM customers; RESET client_encoding", "runs"),
    ("SET search_path = pg_temp, public; SELECT * FROM customers; RESET search_path", "runs"),
]
MYSQL = [
    # functions MariaDB has and PostgreSQL does not
    ("SELECT reverse(jt.v) FROM customers c, JSON_TABLE(JSON_ARRAY(c.ssn), '$[*]' "
     "COLUMNS (v VARCHAR(20) PATH '$')) jt", "refused"),
    ("SELECT ELT(1, ssn) FROM customers", "refused"),
    ("SELECT FIELD(ssn, '1') FROM customers", "refused"),
    ("SELECT INSTR(ssn, '1') FROM customers", "refused"),
    ("SELECT LOCATE('1', ssn) FROM customers", "refused"),
    ("SELECT IF(ssn = '1', 1, 0) FROM customers", "either"),
    ("SELECT IFNULL(ssn, '') FROM customers", "refused"),
    ("SELECT ANY_VALUE(ssn) FROM customers", "refused"),
    ("SELECT BIT_LENGTH(ssn) FROM customers", "refused"),
    ("SELECT CRC32(ssn) FROM customers", "refused"),
    ("SELECT SHA1(ssn) FROM customers", "refused"),
    ("SELECT COMPRESS(ssn) FROM customers", "refused"),
    ("SELECT AES_ENCRYPT(ssn, 'k') FROM customers", "refused"),
    ("SELECT INSERT(ssn, 1, 0, 'x') FROM customers", "refused"),
    ("SELECT JSON_EXTRACT(JSON_ARRAY(ssn), '$[0]') FROM customers", "refused"),
    ("SELECT JSON_QUOTE(ssn) FROM customers", "refused"),
    ("SELECT COLUMN_CREATE('a', ssn) FROM customers", "refused"),
    ("SELECT DEFAULT(ssn) FROM customers", "either"),
    ("SELECT CHARSET(ssn) FROM customers", "either"),
    ("SELECT ssn + 0 FROM customers", "refused"),
    ("SELECT -ssn FROM customers", "refused"),
    ("SELECT ssn DIV 1 FROM customers", "refused"),
    # predicates MariaDB spells its own way
    ("SELECT name FROM customers WHERE ssn SOUNDS LIKE '1'", "refused"),
    ("SELECT name FROM customers WHERE MATCH(ssn) AGAINST ('1')", "refused"),
    ("SELECT name FROM customers WHERE ssn RLIKE '^1'", "refused"),
    ("SELECT name FROM customers WHERE STRCMP(ssn, '1')", "refused"),
    ("SELECT name FROM customers WHERE JSON_CONTAINS(JSON_ARRAY(ssn), '1')", "refused"),
    ("SELECT name FROM customers WHERE ssn", "refused"),
    ("SELECT name FROM customers WHERE NOT ssn", "refused"),
    ("SELECT name FROM customers WHERE ssn AND 1", "refused"),
    ("SELECT name FROM customers WHERE ssn XOR 1", "refused"),
    ("SELECT name FROM customers HAVING ssn > '1'", "refused"),
    ("SELECT name FROM customers WHERE `customers`.`ssn` > '1'", "refused"),
    ("SELECT name FROM customers WHERE BINARY ssn = '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = BINARY '1'", "either"),
    ("SELECT name FROM customers WHERE ssn = '1' COLLATE utf8mb4_general_ci", "either"),
    ("SELECT name FROM customers WHERE ssn = name COLLATE utf8mb4_bin", "either"),
    ("SELECT name FROM customers WHERE ssn = _latin1'1'", "either"),
    ("SELECT name FROM customers WHERE ssn = N'1'", "either"),
    ("SELECT name FROM customers WHERE ssn = CHAR(49)", "refused"),
    ("SELECT name FROM customers WHERE ssn = @@version", "refused"),
    ("SELECT name FROM customers WHERE ssn IN ((SELECT '1'))", "refused"),
    ("SELECT name FROM customers WHERE ssn IN (SELECT '1' FROM dual)", "refused"),
    ("SELECT name FROM customers WHERE ssn = ANY (SELECT '1')", "refused"),
    ("SELECT name FROM customers WHERE ssn = (SELECT ssn FROM customers LIMIT 1)", "either"),
    ("SELECT name FROM customers WHERE (ssn, id) IN (('1', 1))", "either"),
    ("SELECT name FROM customers WHERE ssn <=> '1'", "runs"),
    ("SELECT name FROM customers WHERE ssn = x'31'", "runs"),
    ("SELECT name FROM customers WHERE ssn = '123%'", "runs"),
    ("SELECT name FROM customers WHERE ssn IS NOT NULL", "runs"),
    ("SELECT name FROM customers WHERE id = 1 AND ssn = '123-45-6789' AND 1/0", "either"),
    ("DO (SELECT sleep(1) FROM customers WHERE ssn LIKE '1%')", "refused"),
    # grouping and ordering
    ("SELECT count(*) FROM customers GROUP BY LEFT(ssn, 1)", "refused"),
    ("SELECT name FROM customers ORDER BY FIELD(ssn, '1')", "refused"),
    ("SELECT name FROM customers ORDER BY ssn IS NULL, ssn", "refused"),
    ("SELECT name FROM customers ORDER BY `ssn`", "refused"),
    ("SELECT name FROM customers GROUP BY ssn DESC", "either"),
    ("SELECT name FROM customers GROUP BY ssn WITH ROLLUP", "runs"),
    ("VALUES ((SELECT ssn FROM customers LIMIT 1))", "either"),
    # variables, HANDLER, dynamic SQL, SET STATEMENT
    ("SELECT * FROM customers LIMIT 1 INTO @a, @b, @c, @d, @e, @f", "refused"),
    ("SELECT ssn FROM customers INTO @a", "refused"),
    ("HANDLER customers OPEN AS h; HANDLER h READ `PRIMARY` FIRST; HANDLER h CLOSE", "either"),
    ("HANDLER customers OPEN; HANDLER customers READ ssn >= ('2'); HANDLER customers CLOSE", "either"),
    ("EXECUTE IMMEDIATE 'SELECT reverse(ssn) FROM customers'", "refused"),
    ("EXECUTE IMMEDIATE 'CREATE TABLE rt_leak AS SELECT ssn FROM customers'", "refused"),
    ("EXECUTE IMMEDIATE CONCAT('SELECT rev', 'erse(ssn) FROM customers')", "refused"),
    ("SET STATEMENT max_statement_time=10 FOR SELECT reverse(ssn) FROM customers", "refused"),
    ("PREPARE rt_s FROM 'SELECT name FROM customers WHERE ssn = ?'; "
     "EXECUTE rt_s USING '123-45-6789'", "runs"),
    ("PREPARE rt_t FROM 'SELECT name FROM customers WHERE ssn LIKE ?'", "refused"),
    ("PREPARE rt_u FROM 'SELECT name FROM customers WHERE ssn = ?'; SET @p = '123-45-6789'; "
     "EXECUTE rt_u USING @p", "either"),
    ("SET @@session.sql_mode = 'PAD_CHAR_TO_FULL_LENGTH'", "refused"),
    ("SELECT @@sql_mode", "runs"),
    # writes that would copy masked values
    ("UPDATE notes n JOIN customers c ON n.id = c.id SET n.body = c.ssn WHERE n.id = 1", "refused"),
    ("INSERT INTO notes (id, body) SELECT id, name FROM customers WHERE id = 1 "
     "ON DUPLICATE KEY UPDATE body = VALUES(body)", "runs"),
    # files, statistics, plans, warnings, charsets
    ("SELECT LOAD_FILE('/etc/passwd')", "refused"),
    ("SELECT * FROM mysql.column_stats", "either"),
    ("EXPLAIN FORMAT=JSON SELECT * FROM customers WHERE ssn = '123-45-6789'", "runs"),
    ("ANALYZE FORMAT=JSON SELECT * FROM customers WHERE ssn = '123-45-6789'", "runs"),
    ("SELECT name FROM customers WHERE ssn = '1'; SHOW WARNINGS", "runs"),
    ("SET character_set_results = utf32; SELECT ssn, email, card_number FROM customers; "
     "SET character_set_results = utf8mb4", "runs"),
    ("SET NAMES latin1; SELECT ssn, email FROM customers; SET NAMES utf8mb4", "runs"),
]


@pytest.fixture(scope="module")
def seeded() -> Iterator[dict[str, str]]:
    os.environ[PASSWORD_ENV] = "unused"
    for db in seeded_databases():
        os.environ[PASSWORD_ENV] = db["password"]
        yield db


def corpus(kind: str) -> list[tuple[str, str]]:
    return BOTH + (POSTGRES if kind == "postgres" else MYSQL)


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_redteam_corpus(seeded: dict[str, str], kind: str) -> None:
    failures = []
    async with connected(kind, seeded) as conn:
        for sql, expected in corpus(kind):
            text, refusals = await run_all(conn, sql)
            assert_no_secrets(text, f"{kind}: {sql!r}")
            refused = any(refusals)
            if expected == "refused" and not refused:
                failures.append(f"not refused: {sql!r} -> {text[:200]!r}")
            if expected == "runs" and refused:
                failures.append(f"refused: {sql!r} -> {refusals}")
            if conn.in_transaction:
                await run_all(conn, "ROLLBACK")
    assert not failures, "\n".join(failures)

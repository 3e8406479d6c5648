"""Red-team corpus: more attempts to get masked values out of the SQL engine, on the real
PostgreSQL and MariaDB, beyond those of test_sql_masking.

Each attempt runs through `SqlConnection` exactly as a console statement would; whatever comes
back (cells, errors, notices, refusals) must not hold a seeded sensitive value in any obvious
encoding. "refused": the engine must refuse it; "runs": it must run (masked); "either": refusing
or masking are both acceptable. Attempts run in order on one session per engine (some create
views that later ones read).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator

import pymysql
import pytest
from sqldb import MY_HOST, MY_PORT, seeded_databases
from test_sql_masking import PASSWORD_ENV, check_corpus, connected, target

from bastion.config import MaskingRule
from bastion.sql import SqlPolicy, open_sql_connection

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
    ("SELECT * FROM customers c1 NATURAL JOIN customers c2", "refused"),
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
    ("SELECT * FROM customers NATURAL JOIN (SELECT '123-45-6789'::varchar AS ssn) s", "refused"),
    ("SELECT * FROM customers JOIN (SELECT '1' AS ssn) s USING (ssn)", "refused"),
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
    ("SET client_encoding = 'LATIN1'; SELECT ssn, email FROM customers; RESET client_encoding", "either"),
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
    ("SELECT name FROM customers GROUP BY ssn WITH ROLLUP", "refused"),
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
     "SET character_set_results = utf8mb4", "either"),
    ("SET NAMES latin1; SELECT ssn, email FROM customers; SET NAMES utf8mb4", "either"),
]


# Round 2 (after 2f1ef38): more ways to rename masked values, copy them, or test guesses.
ROUND2_BOTH = [
    # renaming through joins, nested aliases, CTE chains, recursion
    ("SELECT reverse(ssn) FROM customers JOIN (SELECT id, ssn FROM customers) x USING (id, ssn)", "refused"),
    ("SELECT reverse(c.ssn) FROM customers c NATURAL JOIN customers", "refused"),
    ("WITH a AS (SELECT ssn AS s1 FROM customers), b AS (SELECT s1 AS s2 FROM a) SELECT reverse(s2) FROM b",
     "refused"),
    ("WITH a AS (SELECT * FROM customers), b AS (SELECT * FROM a) SELECT reverse(b.ssn) FROM b", "refused"),
    ("SELECT reverse(t.x) FROM (SELECT * FROM (SELECT ssn x FROM customers) a) t", "refused"),
    ("WITH RECURSIVE r(v) AS (SELECT ssn FROM customers UNION SELECT v FROM r) SELECT reverse(v) FROM r",
     "refused"),
    ("SELECT max(name) OVER (PARTITION BY ssn) FROM customers", "refused"),
    ("SELECT id FROM customers GROUP BY GROUPING SETS ((ssn, id))", "either"),
    # candidates that are not literals, whatever they are called
    ("SELECT c.id FROM customers c JOIN (VALUES ('ada@example.com'), ('x')) x ON c.email = x.ada", "either"),
    ("SELECT id FROM customers WHERE (ssn) IN (SELECT '123-45-6789' ssn)", "refused"),
    # writes that would copy masked values, or use them as conditions
    ("UPDATE customers SET name = ssn WHERE id = 1", "refused"),
    ("UPDATE customers c SET name = c2.ssn FROM customers c2 WHERE c.id = c2.id AND c.id = 1", "either"),
    ("CREATE VIEW r2_v3 AS SELECT id, ssn FROM customers", "refused"),
    ("CREATE VIEW r2_v9 AS WITH q AS (SELECT * FROM customers) SELECT * FROM q", "refused"),
    ("SELECT reverse(ssn) FROM r2_v9", "either"),
    ("CREATE TABLE r2_c2 (id int, s varchar(20))", "runs"),
    ("INSERT INTO r2_c2 SELECT id, ssn FROM customers", "refused"),
    ("INSERT INTO r2_c2 (id, s) SELECT id, ssn FROM customers", "refused"),
    ("SELECT * FROM r2_c2", "runs"),
    ("UPDATE customers SET note = 'x' WHERE id = 5 AND ssn = '567-89-0123'", "either"),
    # equality uses (joins and semi-joins over masked columns are refused since round 2)
    ("SELECT id FROM customers WHERE ssn IN (SELECT ssn FROM customers WHERE name = 'Ada Lovelace')",
     "refused"),
    ("SELECT id, (SELECT count(*) FROM customers d WHERE d.ssn = c.ssn) FROM customers c", "refused"),
    ("SELECT ssn = '123-45-6789' AS hit, id FROM customers", "either"),
    ("SELECT count(*) FROM customers GROUP BY ssn = '123-45-6789'", "either"),
    ("SELECT count(DISTINCT ssn) FROM customers WHERE id < 3", "runs"),
    ("SELECT name FROM customers c WHERE c.ssn = c.email", "either"),
]
ROUND2_POSTGRES = [
    # composite values, row types, JSON and table functions over rows
    ("SELECT reverse(f) FROM (SELECT (c).ssn AS f FROM customers c) s", "refused"),
    ("SELECT reverse((r).ssn) FROM (SELECT c AS r FROM customers c) s", "refused"),
    ("SELECT (c).* FROM customers c", "either"),
    ("SELECT reverse(x.ssn) FROM (SELECT (c).* FROM customers c) x", "refused"),
    ("SELECT reverse(e.value) FROM customers c, jsonb_each_text(to_jsonb(c)) e", "refused"),
    ("SELECT reverse(j.ssn) FROM (SELECT jsonb_agg(c) a FROM customers c) s, "
     "jsonb_to_recordset(s.a) AS j(ssn text)", "refused"),
    ("SELECT reverse(r.ssn) FROM json_populate_recordset(null::customers, "
     "(SELECT json_agg(c) FROM customers c)) r", "refused"),
    ("SELECT reverse(z) FROM unnest((SELECT array_agg(ssn) FROM customers)) z", "refused"),
    ("SELECT jsonb_path_query(to_jsonb(c), '$.ssn') FROM customers c", "refused"),
    ("SELECT c.ssn IS JSON FROM customers c", "refused"),
    ("SELECT hstore(l) FROM (SELECT id, ssn FROM customers) l", "refused"),
    ("SELECT l FROM (SELECT id, ssn FROM customers) l", "either"),
    ("SELECT l::text FROM (SELECT ssn FROM customers) l", "refused"),
    ("SELECT to_json(l) FROM (SELECT ssn FROM customers) l", "refused"),
    ("SELECT reverse(l::text) FROM customers c, LATERAL (SELECT c.ssn) l", "refused"),
    ("SELECT reverse(l.ssn) FROM customers c, LATERAL (SELECT c.*) l", "refused"),
    ("SELECT reverse(x) FROM customers, LATERAL (SELECT ssn) AS l(x)", "refused"),
    # column alias lists shorter or longer than the relation, VALUES, GROUP BY position
    ("SELECT reverse(x) FROM (SELECT ssn FROM customers) s(x) GROUP BY 1", "refused"),
    ("SELECT reverse(ssn) FROM (SELECT * FROM customers) AS t(i)", "refused"),
    ("SELECT reverse(i::text) FROM (SELECT ssn, id FROM customers) AS t(i)", "refused"),
    ("SELECT reverse(nm) FROM customers AS t(id, nm)", "runs"),
    ("SELECT reverse(t.email) FROM customers AS t(email)", "refused"),
    ("SELECT reverse(email) FROM customers AS t(id, email, x)", "refused"),
    ("SELECT reverse(q.v) FROM (VALUES (1)) t(a), LATERAL (SELECT ssn FROM customers) q(v)", "refused"),
    ("SELECT reverse(column1) FROM (VALUES ((SELECT ssn FROM customers LIMIT 1))) v", "refused"),
    ("SELECT DISTINCT ON (ssn) ssn FROM customers", "refused"),
    ("SELECT name FROM customers GROUP BY ssn, name HAVING ssn = ANY('{1}')", "refused"),
    # candidates computed from generate_series, arrays or VALUES, whatever they are called
    ("SELECT c.id, x.ssn FROM customers c JOIN (SELECT lpad(g::text, 3, '0') || '-45-6789' AS ssn "
     "FROM generate_series(0, 999) g) x ON c.ssn = x.ssn", "refused"),
    ("SELECT c.id, x.ssn FROM customers c JOIN (SELECT lpad(g::text, 3, '0') || '-45-6789' "
     "FROM generate_series(0, 999) g) x(ssn) ON c.ssn = x.ssn", "refused"),
    ("SELECT id FROM customers WHERE ssn IN (SELECT lpad(g::text, 3, '0') || '-56-7890' AS ssn "
     "FROM generate_series(0, 999) g)", "refused"),
    ("SELECT id FROM customers NATURAL JOIN (SELECT lpad(g::text, 3, '0') || '-78-9012' AS ssn "
     "FROM generate_series(0, 999) g) x", "refused"),
    ("SELECT g FROM generate_series(0, 999) g JOIN customers c "
     "ON c.ssn = lpad(g::text, 3, '0') || '-45-6789'", "refused"),
    ("SELECT id FROM customers WHERE ssn = ANY (ARRAY['123-45-6789', '1'])", "refused"),
    ("SELECT id FROM customers WHERE ssn = ANY ('{123-45-6789,1}'::text[])", "refused"),
    ("SELECT id FROM customers WHERE ssn IN (VALUES ('123-45-6789'), ('1'))", "refused"),
    ("SELECT id FROM customers c WHERE c.ssn = (SELECT ssn FROM customers WHERE id = 1)", "either"),
    ("SELECT id FROM customers WHERE ssn = $$123-45-6789$$", "either"),
    ("SELECT id FROM customers WHERE ssn = E'123-45-6789'", "either"),
    # writes: INSERT … SELECT into masked columns, ON CONFLICT, MERGE, generated columns, DDL
    ("INSERT INTO customers (id, name, ssn) SELECT 1000 + g, 'g', lpad(g::text, 3, '0') || '-45-6789' "
     "FROM generate_series(0, 999) g ON CONFLICT DO NOTHING", "refused"),
    ("INSERT INTO customers (id, name, email) SELECT 2000 + g, 'g', lpad(g::text, 3, '0') || '-56-7890' "
     "FROM generate_series(0, 999) g", "refused"),
    ("UPDATE customers SET email = ssn WHERE id = 4000", "refused"),
    ("UPDATE customers SET ssn = email WHERE id = 4000", "refused"),
    ("INSERT INTO customers (id, name) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = customers.ssn",
     "refused"),
    ("INSERT INTO customers (id, name) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE "
     "SET name = customers.ssn RETURNING name", "refused"),
    ("INSERT INTO customers (id, name, ssn) VALUES (3000, 'x', '123-45-6789') ON CONFLICT (ssn) "
     "DO UPDATE SET note = 'dup' RETURNING id, note", "either"),
    ("UPDATE customers SET (name, note) = (SELECT ssn, ssn FROM customers WHERE id = 1) WHERE id = 2",
     "refused"),
    ("UPDATE customers SET (name) = ROW(ssn) WHERE id = 1", "refused"),
    ("UPDATE customers c SET name = x.v FROM (SELECT id, ssn FROM customers) x(i, v) "
     "WHERE c.id = x.i AND c.id = 1", "refused"),
    ("INSERT INTO notes (id, body) SELECT id, ssn FROM customers ON CONFLICT DO NOTHING", "refused"),
    ("INSERT INTO notes (id, body) VALUES (600, 'x') ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
     "runs"),
    ("MERGE INTO notes n USING customers c ON n.id = c.id WHEN MATCHED THEN UPDATE SET body = c.ssn",
     "refused"),
    ("MERGE INTO customers c USING notes n ON n.id = c.id WHEN MATCHED THEN UPDATE SET note = c.ssn",
     "refused"),
    ("CREATE TABLE r2_gen (id int, s text, r text GENERATED ALWAYS AS (reverse(s)) STORED)", "runs"),
    ("INSERT INTO r2_gen (id, s) SELECT id, ssn FROM customers", "refused"),
    ("SELECT * FROM r2_gen", "runs"),
    ("CREATE MATERIALIZED VIEW r2_mv AS SELECT id, ssn FROM customers", "refused"),
    ("CREATE MATERIALIZED VIEW r2_mv2 AS SELECT * FROM customers", "refused"),
    ("CREATE VIEW r2_v2 AS SELECT * FROM customers", "refused"),
    ("CREATE VIEW r2_v4 (a, b) AS SELECT id, ssn FROM customers", "refused"),
    ("CREATE VIEW r2_v5 AS SELECT c FROM customers c", "refused"),
    ("CREATE VIEW r2_v6 AS TABLE customers", "refused"),
    ("CREATE VIEW r2_v7 AS SELECT * FROM customer_view", "refused"),
    ("CREATE VIEW r2_v8 AS SELECT * FROM (SELECT id, ssn AS zz FROM customers) q", "refused"),
    ("CREATE TEMP VIEW r2_tv AS SELECT id, name FROM customers", "runs"),
    ("SELECT * FROM r2_tv", "runs"),
    ("CREATE INDEX r2_i ON customers (ssn)", "either"),
    ("CREATE STATISTICS r2_st (mcv) ON ssn, name FROM customers", "either"),
    ("ANALYZE customers", "either"),
    ("SELECT * FROM pg_mcv_list_items((SELECT oid FROM pg_statistic_ext LIMIT 1))", "either"),
    ("CREATE DOMAIN r2_dom AS text CHECK (VALUE LIKE '1%')", "either"),
    ("SELECT name FROM customers WHERE ssn::r2_dom = '1'", "refused"),
    # plans, cursors and statements with literals
    ("EXPLAIN (ANALYZE, COSTS OFF) SELECT c.id FROM customers c JOIN customers d ON c.ssn = d.email",
     "refused"),
    ("BEGIN; DECLARE r2_cx CURSOR FOR SELECT id FROM customers WHERE ssn = '123-45-6789'; "
     "FETCH ALL FROM r2_cx; COMMIT", "runs"),
    ("PREPARE r2_pv(text) AS SELECT c.id FROM customers c WHERE c.ssn = $1 OR c.email = $1", "runs"),
    ("SELECT name FROM customers WHERE id = 1 AND ssn = '123-45-6789' FOR UPDATE SKIP LOCKED", "runs"),
]
ROUND2_MYSQL = [
    ("SELECT reverse(ssn) FROM customers c JOIN customers d USING (ssn)", "refused"),
    ("SELECT reverse(v) FROM (WITH q(v) AS (SELECT ssn FROM customers) SELECT v FROM q) s", "refused"),
    ("SELECT reverse(jt.ssn) FROM customers c, JSON_TABLE(JSON_OBJECT('s', c.ssn), '$' "
     "COLUMNS (ssn VARCHAR(20) PATH '$.s')) jt", "refused"),
    ("SELECT id FROM customers WHERE ssn = 0x3132332D34352D36373839", "either"),
    ("SELECT id FROM customers WHERE ssn = _binary'123-45-6789'", "either"),
    ("SELECT id FROM customers WHERE ssn IN ('123-45-6789' COLLATE utf8mb4_bin)", "either"),
    ("SELECT id FROM customers WHERE ssn LIKE BINARY '1%'", "refused"),
    ("SELECT id FROM customers WHERE ssn = '123-45-6789' PROCEDURE ANALYSE()", "either"),
    ("SELECT id FROM customers GROUP BY ssn, id PROCEDURE ANALYSE()", "either"),
    ("SELECT id FROM customers WHERE email = 'ada@example.com ' ", "runs"),
    ("SELECT id FROM customers WHERE ssn = 'x'; SHOW WARNINGS; SHOW ERRORS", "runs"),
    ("SELECT id FROM customers WHERE ssn = '123-45-6789' LIMIT 1 OFFSET 0", "runs"),
    ("SELECT id FROM customers LIMIT 1 OFFSET 1 INTO @r2", "either"),
    ("SET @r2 = 'x'; SELECT id FROM customers WHERE ssn = @r2", "refused"),
    ("INSERT INTO notes (id, body) SELECT id, ssn FROM customers ON DUPLICATE KEY UPDATE body = VALUES(body)",
     "refused"),
    ("INSERT INTO notes (id, body) VALUES (1, 'x') ON DUPLICATE KEY UPDATE "
     "body = (SELECT ssn FROM customers WHERE id = 1)", "refused"),
    ("REPLACE INTO notes (id, body) SELECT id, ssn FROM customers", "refused"),
    ("UPDATE customers SET note = ssn WHERE id = 1 ORDER BY id LIMIT 1", "refused"),
    ("CREATE TABLE r2_gen (id int, s varchar(20), r varchar(20) AS (reverse(s)))", "runs"),
    ("INSERT INTO r2_gen (id, s) SELECT id, ssn FROM customers", "refused"),
    ("CREATE TABLE r2_copy AS SELECT id, ssn FROM customers", "refused"),
    ("CREATE TABLE r2_copy2 SELECT c.* FROM customers c", "refused"),
    ("CREATE VIEW r2_vm AS SELECT c.* FROM customers c", "refused"),
    ("CREATE INDEX r2_i ON customers (ssn)", "either"),
    ("ANALYZE TABLE customers PERSISTENT FOR ALL", "either"),
    ("SELECT * FROM mysql.column_stats WHERE table_name = 'customers'", "either"),
    ("SELECT * FROM information_schema.statistics WHERE table_name = 'customers'", "either"),
    ("SET SESSION group_concat_max_len = 4; SELECT id FROM customers WHERE ssn = 'x'", "runs"),
    ("SET NAMES binary; SELECT ssn, email, card_number FROM customers; SET NAMES utf8mb4", "either"),
    ("SELECT ssn FROM customers UNION DISTINCT SELECT ssn FROM customers", "refused"),
    ("SELECT ssn FROM customers INTERSECT SELECT ssn FROM customers", "refused"),
]


# Round 3 (after 8cc81c6): lexical edge cases (comments, quoting, literal spellings), the lookup
# budget, predicates that are not comparisons, shadowing tables, and what a real user would type.
ROUND3_BOTH = [
    # quoting and comments: the server runs what the bastion analysed
    ("SELECT 1 /* /* */ , reverse(ssn) /* */ */ FROM customers", "either"),
    ("SELECT 1 AS \"a\"\"b\", reverse(ssn) FROM customers", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1'; ;; SELECT 2", "runs"),
    # the budget counts every compared value, however the comparison is wrapped
    ("SELECT name FROM customers WHERE ssn = '123-45-6789' OR ssn = '234-56-7890'", "runs"),
    ("SELECT name FROM customers WHERE ssn IN ('1', '2', '3') AND ssn NOT IN ('4')", "runs"),
    ("SELECT name FROM customers WHERE (ssn = '1') = (ssn = '2')", "runs"),
    ("SELECT name FROM customers WHERE ssn IN ('1') IS NOT NULL", "runs"),
    ("SELECT name FROM customers WHERE (ssn, id) = ('123-45-6789', 1)", "refused"),
    ("SELECT name FROM customers WHERE (ssn, id) IN (('123-45-6789', 1))", "refused"),
    ("SELECT name FROM customers WHERE ssn = 'a' 'b'", "refused"),
    ("SELECT name FROM customers WHERE ssn = DEFAULT", "refused"),
    ("SELECT name FROM customers WHERE ssn IS TRUE", "refused"),
    ("SELECT name FROM customers LIMIT (SELECT count(*) FROM customers WHERE ssn = '123-45-6789')",
     "runs"),
    # what a user would type: none of these is refused
    ("SELECT c.name, n.body FROM customers c JOIN notes n ON n.id = c.id ORDER BY c.id", "runs"),
    ("SELECT * FROM customers c JOIN notes n ON c.id = n.id", "runs"),
    ("SELECT * FROM customers c LEFT JOIN notes n USING (id)", "runs"),
    ("SELECT customers.* FROM customers", "runs"),
    ("SELECT name, count(*) FROM customers GROUP BY name ORDER BY 2 DESC", "runs"),
    ("SELECT * FROM customers WHERE id IN (SELECT id FROM notes)", "runs"),
    ("SELECT * FROM customers ORDER BY id DESC LIMIT 3", "runs"),
    ("SELECT count(*) FROM customers WHERE ssn IS NULL", "runs"),
    ("SELECT * FROM customers WHERE email = 'ada@example.com'", "runs"),
    ("SELECT id, name, ssn FROM customers WHERE name LIKE 'A%' ORDER BY name", "runs"),
    ("SELECT c.*, n.body FROM customers c, notes n WHERE c.id = n.id", "runs"),
    ("SELECT COUNT(*), COUNT(ssn), COUNT(DISTINCT email) FROM customers", "runs"),
    ("SELECT * FROM customers WHERE ssn = '123-45-6789' OR email = 'ada@example.com'", "runs"),
    ("SELECT * FROM customer_view WHERE tax_id = '123-45-6789'", "runs"),
    ("SELECT id, ssn, email FROM customers WHERE id BETWEEN 1 AND 3", "runs"),
    ("UPDATE customers SET note = note WHERE id = 1", "runs"),
]
ROUND3_POSTGRES = [
    # quoting: backslashes, E'' and dollar tags read as the server reads them
    ("SELECT 'a\\' , reverse(ssn), '' FROM customers", "refused"),
    ("SELECT E'a\\' , reverse(ssn), ' FROM customers", "runs"),
    ("SELECT $a$ x $a$, $_$ , reverse(ssn), $_$ FROM customers", "runs"),
    ("SELECT $a1$ , reverse(ssn), $a1$ FROM customers", "runs"),
    ("SELECT 1 $a$ FROM customers", "refused"),
    ("SELECT 1 AS a$b$, reverse(ssn) AS x$b$ FROM customers", "refused"),
    ("SELECT id AS a$$, reverse(ssn) AS x$$ FROM customers", "refused"),
    ("SELECT name FROM customers WHERE ssn = 'a' -- c\n'b'", "refused"),
    ("SELECT name FROM customers WHERE ssn = 'a' /* c */\n'b'", "refused"),
    ("SELECT name FROM customers WHERE ssn = U&'\\0031'", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' UESCAPE '!'", "refused"),
    ("SELECT name FROM customers WHERE ssn = B'101'", "refused"),
    ("SELECT name FROM customers WHERE ssn = X'1F'", "either"),
    ("SELECT name FROM customers WHERE ssn = text '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = varchar '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = 1::text", "refused"),
    ("SELECT name FROM customers WHERE ssn = $1::text", "refused"),
    ("SELECT name FROM customers WHERE ssn = +'1'", "either"),
    # row references under other spellings
    ("SELECT to_json(l) FROM (SELECT * FROM customers) l", "refused"),
    ("SELECT to_json(l) FROM (TABLE customers) l", "refused"),
    ("SELECT to_json(public.customers) FROM public.customers", "either"),
    ('SELECT to_json("public"."customers".*) FROM "public"."customers"', "refused"),
    ("SELECT reverse(customers.ssn) FROM public.customers AS customers", "refused"),
    ("SELECT xmlelement(name x, ssn) FROM customers", "refused"),
    # arrays, quantifiers, IS predicates, CASE
    ("SELECT name FROM customers WHERE ssn = ANY($1)", "refused"),
    ("SELECT name FROM customers WHERE ssn = ALL('{}')", "refused"),
    ("SELECT name FROM customers WHERE ssn <> ALL('{1,2}')", "refused"),
    ("SELECT name FROM customers WHERE ssn = SOME('{1,2}')", "refused"),
    ("SELECT name FROM customers WHERE ROW(ssn) = ROW('123-45-6789')", "refused"),
    ("SELECT name FROM customers WHERE ssn IN (VALUES ('1'))", "refused"),
    ("SELECT name FROM customers WHERE ssn IS DOCUMENT", "refused"),
    ("SELECT name FROM customers WHERE ssn IS NORMALIZED", "refused"),
    ("SELECT name FROM customers WHERE ssn IS NFC NORMALIZED", "refused"),
    ("SELECT name FROM customers WHERE ssn IS NOT DISTINCT FROM '1' OR ssn IS NOT DISTINCT FROM '2'",
     "runs"),
    ("SELECT name FROM customers WHERE ssn = '1' IS NOT TRUE", "runs"),
    ("SELECT name FROM customers WHERE CASE WHEN ssn = '123-45-6789' THEN true END", "either"),
    ("SELECT name FROM customers WHERE CASE ssn WHEN '123-45-6789' THEN true END", "refused"),
    ("SELECT CASE ssn WHEN '123-45-6789' THEN 1 END FROM customers", "refused"),
    ("SELECT name FROM customers WHERE ssn IS NOT NULL AND 1/(CASE WHEN ssn = '1' THEN 0 ELSE 1 END) = 1",
     "either"),
    ("SELECT name FROM customers WHERE ssn", "refused"),
    ("SELECT name FROM customers WHERE NOT ssn", "refused"),
    ("EXPLAIN SELECT * FROM customers WHERE ssn = '123-45-6789'", "runs"),
    # shadowing customers with a temporary table of the same name (last: it stays for the session)
    ("SET search_path = pg_temp, public", "runs"),
    ("CREATE TEMP TABLE customers (id int, ssn text)", "either"),
    ("SELECT reverse(ssn) FROM customers", "refused"),
    ("SELECT * FROM customers", "runs"),
    ("SELECT reverse(ssn) FROM pg_temp.customers", "either"),
    ("CREATE TEMP VIEW customers AS SELECT id, name FROM public.customers", "either"),
    ("RESET search_path", "runs"),
]
ROUND3_MYSQL = [
    # comments and quoting: `#`, `--` with and without a space, backslashes, introducers
    ("SELECT 1 # , reverse(ssn)\nFROM customers", "runs"),
    ("SELECT 1 --, reverse(ssn)\nFROM customers", "refused"),
    ("SELECT 1 /* /* */ , reverse(ssn) /* */ */ FROM customers", "refused"),
    ("SELECT 'a\\' , reverse(ssn), '' FROM customers", "refused"),
    ("SELECT 'a\\'', reverse(ssn) FROM customers", "refused"),
    ('SELECT "a\\"", reverse(ssn) FROM customers', "refused"),
    ("SELECT 'x\\\\', reverse(ssn), '\\\\' FROM customers", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' AND 1 # x", "runs"),
    # prepared text the bastion reads
    ("PREPARE r3n FROM N'SELECT reverse(ssn) FROM customers'", "refused"),
    ("PREPARE r3c FROM 'SELECT 1 /* \\\\*/, reverse(ssn) FROM customers /* */'", "refused"),
    ("CALL sys.execute_prepared_stmt('SELECT reverse(ssn) FROM customers')", "either"),
    # literal spellings a comparison may not use
    ("SELECT name FROM customers WHERE ssn = DATE'2020-01-01'", "refused"),
    ("SELECT name FROM customers WHERE ssn = {d '2020-01-01'}", "refused"),
    ("SELECT name FROM customers WHERE ssn = 1e0", "refused"),
    ("SELECT name FROM customers WHERE ssn = b'1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = _utf8mb4 x'31'", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' < 1", "refused"),
    ("SELECT name FROM customers WHERE ssn IS TRUE", "refused"),
    ("SELECT name FROM customers WHERE ssn IS UNKNOWN", "either"),
    ("SELECT name FROM customers WHERE ssn = '1' IS TRUE", "runs"),
    ("SELECT name FROM customers WHERE ssn = '1' = 0", "runs"),
    ("SELECT name FROM customers WHERE ssn IN ('1') = 0", "runs"),
    ("SELECT name FROM customers WHERE ssn NOT IN ('1') IS NULL", "runs"),
    ("EXPLAIN SELECT * FROM customers WHERE ssn = '123-45-6789'", "runs"),
    # another current database: customers is not there (last: the session stays in it)
    ("USE information_schema", "either"),
    ("SELECT reverse(ssn) FROM customers", "refused"),
    ("SELECT * FROM customers", "either"),
]


# Round 4 (after a8bcc95): row values through format()/concat_ws/ROW/ARRAY, XMLTABLE and JSON
# record functions, settings, collations, sequences, view replacement and renaming, index walks
# (HANDLER, FORCE INDEX, OFFSET), statistics and plans, and literal spellings of equality.
ROUND4_BOTH = [
    ("SELECT name FROM customers LIMIT 1 OFFSET 2", "runs"),
    ("SELECT name FROM customers WHERE ssn = '' OR ssn IS NULL", "runs"),
    ("SELECT id, email FROM customers", "runs"),
    ("SELECT name FROM customers WHERE id = 999 AND ssn = '123-45-6789' FOR UPDATE", "runs"),
    ("DELETE FROM customers WHERE ssn = '000-00-0000' AND id = 999", "runs"),
    ("CREATE TABLE rt4_t (id int, s varchar(20))", "runs"),
    ("CREATE VIEW rt4_v AS SELECT id, name FROM customers", "runs"),
    ("CREATE OR REPLACE VIEW rt4_v AS SELECT id, name, ssn FROM customers", "refused"),
    ("CREATE OR REPLACE VIEW customer_view AS SELECT id, name, ssn AS tax_id, upper(email) AS mail "
     "FROM customers", "refused"),
    ("SELECT * FROM rt4_v", "runs"),
    ("SELECT reverse(ssn) FROM rt4_v", "either"),
    ("INSERT INTO rt4_t (id, s) SELECT id, name FROM customers WHERE id = 1", "runs"),
    ("SELECT s FROM rt4_t", "runs"),
]
ROUND4_POSTGRES = [
    # whole rows through text builders, arrays and scalar subqueries
    ("SELECT format('%s', c) FROM customers c", "refused"),
    ("SELECT format('%s', c.*) FROM customers c", "refused"),
    ("SELECT concat_ws(',', c) FROM customers c", "refused"),
    ("SELECT concat_ws(',', c.*) FROM customers c", "refused"),
    ("SELECT concat(c.*) FROM customers c", "refused"),
    ("SELECT ARRAY[c] FROM customers c", "refused"),
    ("SELECT ARRAY[c.*] FROM customers c", "refused"),
    ("SELECT ROW(c.*)::text FROM customers c", "refused"),
    ("SELECT (c.*)::text FROM customers c", "refused"),
    ("SELECT (SELECT c) FROM customers c", "refused"),
    ("SELECT (SELECT c.ssn) FROM customers c", "refused"),
    ("SELECT translate(customers::text, '0123456789', 'abcdefghij') FROM customers", "refused"),
    ("SELECT translate(x::text, '0123456789', 'abcdefghij') FROM customer_view x", "refused"),
    ("SELECT translate(row_to_json(c)::text, '0123456789', 'abcdefghij') FROM customers c", "refused"),
    ("SELECT x FROM customers c, LATERAL (SELECT c) l(x)", "runs"),
    ("SELECT l FROM customers c, LATERAL (SELECT c.*) l", "runs"),
    ("SELECT * FROM customers c, LATERAL (SELECT c.ssn AS q) l", "runs"),
    ("SELECT customers FROM customers", "runs"),
    ("SELECT pg_column_size(ssn) FROM customers", "refused"),
    ("SELECT pg_typeof(ssn) FROM customers", "refused"),
    # table functions over masked values
    ("SELECT * FROM customers c, xmltable('/a' PASSING xmlelement(name a, c.ssn) "
     "COLUMNS v text PATH '.') x", "refused"),
    ("SELECT reverse(v) FROM customers c, xmltable('/a' PASSING xmlelement(name a, c.ssn) "
     "COLUMNS v text PATH '.') x", "refused"),
    ("SELECT * FROM customers c, json_to_record(json_build_object('a', c.ssn)) AS x(a text)", "refused"),
    ("SELECT xmlagg(xmlelement(name x, name)) FROM customers", "runs"),
    # files, COPY, settings, privileges, catalogs, sequences
    ("SELECT pg_read_file('/etc/hostname')", "refused"),
    ("SELECT pg_read_binary_file('/etc/hostname')", "refused"),
    ("COPY (SELECT name FROM customers) TO STDOUT", "refused"),
    ("SET rt4.x = '123-45-6789'", "runs"),
    ("SELECT current_setting('rt4.x')", "runs"),
    ("SELECT has_column_privilege('customers', 'ssn', 'SELECT')", "runs"),
    ("SELECT relname, reltuples FROM pg_class WHERE relname = 'customers'", "runs"),
    ("CREATE SEQUENCE rt4_seq", "runs"),
    ("SELECT * FROM rt4_seq", "runs"),
    # equality in other spellings, collations, operators
    ("SELECT name FROM customers WHERE ssn = 'x'::unknown", "refused"),
    ("SELECT name FROM customers WHERE ssn = @x", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1%' COLLATE \"C\"", "refused"),
    ("CREATE COLLATION rt4_ci (provider = icu, locale = 'und-u-ks-level1', deterministic = false)",
     "either"),
    ("SELECT name FROM customers WHERE ssn = '123456789' COLLATE rt4_ci", "refused"),
    ("CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = textlike)", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' OFFSET 0", "runs"),
    ("SELECT name FROM customers TABLESAMPLE BERNOULLI (50) REPEATABLE (1)", "runs"),
    ("SELECT * FROM customers FOR SHARE NOWAIT", "runs"),
    # views: renaming columns onto masked names, or masked columns away
    ("ALTER VIEW customer_view RENAME COLUMN tax_id TO t2", "refused"),
    ("ALTER VIEW rt4_v RENAME COLUMN name TO ssn", "refused"),
    ("ALTER TABLE rt4_t RENAME COLUMN s TO ssn", "runs"),
    ("SELECT reverse(ssn) FROM rt4_t", "runs"),
]
ROUND4_MYSQL = [
    # HANDLER: index positioning and walks by a masked column
    ("HANDLER customers OPEN", "refused"),
    ("HANDLER customers READ ssn = ('123-45-6789')", "refused"),
    ("HANDLER customers READ ssn FIRST", "refused"),
    ("HANDLER customers READ ssn NEXT", "refused"),
    ("HANDLER customers READ ssn >= ('3')", "refused"),
    ("HANDLER customers READ `PRIMARY` FIRST WHERE ssn LIKE '1%'", "refused"),
    ("HANDLER customers READ NEXT WHERE ssn > '3' LIMIT 5", "refused"),
    ("HANDLER customers CLOSE", "refused"),
    # index hints and offsets: rows in index order (the accepted residual), values masked
    ("SELECT name FROM customers FORCE INDEX (ssn) WHERE ssn IS NOT NULL", "runs"),
    ("SELECT name FROM customers FORCE INDEX (ssn) WHERE ssn IS NOT NULL LIMIT 1 OFFSET 3", "runs"),
    ("SELECT ssn FROM customers FORCE INDEX (ssn) WHERE ssn IS NOT NULL", "runs"),
    ("SELECT name FROM customers USE INDEX FOR ORDER BY (ssn)", "runs"),
    ("SELECT name FROM customers WHERE ssn = '1' FOR UPDATE SKIP LOCKED", "runs"),
    ("SELECT * FROM customers WHERE ssn = '123-45-6789' LOCK IN SHARE MODE", "runs"),
    ("SELECT * FROM customers LIMIT ROWS EXAMINED 2", "refused"),
    # statistics, plans, checksums
    ("ANALYZE TABLE customers PERSISTENT FOR COLUMNS (ssn) INDEXES ()", "refused"),
    ("SHOW INDEX FROM customers", "runs"),
    ("SELECT * FROM information_schema.STATISTICS WHERE table_name = 'customers'", "runs"),
    ("SHOW TABLE STATUS", "runs"),
    ("EXPLAIN FORMAT=JSON SELECT name FROM customers WHERE ssn = '1'", "runs"),
    ("EXPLAIN SELECT name FROM customers WHERE ssn IN ('1', '2')", "runs"),
    ("CHECKSUM TABLE customers", "refused"),
    ("CHECKSUM TABLE customers EXTENDED", "refused"),
    # equality in other spellings
    ("SELECT name FROM customers WHERE ssn = '123-45-6789   '", "runs"),
    ("SELECT name FROM customers WHERE ssn = ''", "runs"),
    ("SELECT name FROM customers WHERE ssn = 0x", "refused"),
    ("SELECT name FROM customers WHERE ssn IN ('123-45-6789' '1')", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1%' ESCAPE '!'", "refused"),
    ("SELECT name FROM customers WHERE ssn = 'a' COLLATE utf8mb4_unicode_ci", "refused"),
    ("SELECT name FROM customers WHERE ssn = @x", "refused"),
    ("SELECT name FROM customers WHERE ssn = 'x'; SHOW WARNINGS", "runs"),
]


# Round 5 (after fe4a45f): schema and database qualification, catalog staleness (DDL in
# transactions and prepared statements), the per-text masking cache across SET search_path and
# USE, writes and RETURNING whose predicates test masked columns, MySQL multi-table DELETE,
# LOAD XML, TABLE and VALUES ROW. (Writes of masked columns through updatable views, writable CTEs
# and MySQL multi-table UPDATE naming another table first were bypasses: reported, not listed.)
ROUND5_BOTH = [
    # predicates of writes are comparisons: counted like a SELECT's
    ("DELETE FROM customers WHERE ssn = '000-00-0000' AND id = 999", "runs"),
    ("UPDATE customers SET note = note WHERE ssn IN ('000-00-0001', '000-00-0002')", "runs"),
    ("UPDATE customers SET note = note WHERE ssn IN (" + ", ".join(f"'{i}'" for i in range(51)) + ")",
     "refused"),
    ("CREATE TABLE rt5_g (id int, s varchar(20), e varchar(200))", "runs"),
    ("INSERT INTO rt5_g VALUES (1, '100-45-6789', 'a@example.com'), (2, '123-45-6789', "
     "'ada@example.com')", "runs"),
    ("DELETE FROM customers WHERE ssn = (SELECT s FROM rt5_g WHERE id = 2)", "refused"),
    ("UPDATE customers SET note = 'x' WHERE ssn IN (SELECT s FROM rt5_g)", "refused"),
    ("UPDATE customers SET note = 'x' WHERE id = 1 AND email = (SELECT e FROM rt5_g WHERE id = 2)",
     "refused"),
    ("UPDATE customers SET note = (SELECT s FROM rt5_g WHERE id = 1) WHERE id = 999", "runs"),
    ("UPDATE customers SET email = (SELECT e FROM rt5_g WHERE id = 2) WHERE id = 999", "refused"),
    ("UPDATE customers c SET ssn = NULL WHERE id = 999", "refused"),
    # relations created by the user are not covered; names that shadow masked ones are refused
    ("CREATE TABLE rt5_t (id int, ssn varchar(20))", "runs"),
    ("INSERT INTO rt5_t VALUES (1, 'mine')", "runs"),
    ("SELECT reverse(ssn) FROM rt5_t", "runs"),
    ("CREATE VIEW rt5_v AS SELECT id, name FROM customers WHERE ssn = '000-00-0000'", "runs"),
    ("SELECT * FROM rt5_v", "runs"),
    ("CREATE VIEW rt5_v2 AS SELECT c.id FROM customers c JOIN rt5_g g ON c.ssn = g.s", "refused"),
    ("CREATE VIEW rt5_v3 AS SELECT c.id, g.s FROM customers c, rt5_g g WHERE c.email = g.e",
     "refused"),
    ("SELECT reverse(ssn) FROM customers, rt5_t WHERE customers.id = rt5_t.id", "refused"),
]
ROUND5_POSTGRES = [
    # RETURNING of non-masked columns with masked predicates; writable CTEs that only read them
    ("DELETE FROM customers WHERE ssn = '000-00-0000' RETURNING id", "runs"),
    ("UPDATE customers SET note = note WHERE ssn = '000-00-0000' RETURNING id, note", "runs"),
    ("UPDATE customers SET note = note WHERE id = 1 RETURNING ssn, email", "either"),
    ("UPDATE customers SET note = note WHERE id = 1 RETURNING reverse(ssn)", "refused"),
    ("DELETE FROM customers WHERE id = 999 RETURNING upper(email)", "refused"),
    ("DELETE FROM customers c USING rt5_g g WHERE c.ssn = g.s RETURNING c.id", "refused"),
    ("UPDATE customers c SET note = 'x' FROM rt5_g g WHERE c.email = g.e RETURNING c.id", "refused"),
    ("WITH w AS (DELETE FROM customers WHERE ssn = '000-00-0000' RETURNING id) SELECT * FROM w",
     "either"),
    ("WITH w AS (UPDATE customers SET note = ssn WHERE id = 1 RETURNING id) SELECT * FROM w",
     "refused"),
    ("WITH w AS (UPDATE customers SET note = note WHERE id = 1 RETURNING ssn) SELECT reverse(ssn) "
     "FROM w", "refused"),
    ("WITH w AS (UPDATE notes SET body = body WHERE id = 1 RETURNING id) SELECT * FROM w", "runs"),
    ("WITH w AS (DELETE FROM customers c USING rt5_g g WHERE c.ssn = g.s RETURNING c.id) "
     "SELECT * FROM w", "refused"),
    # schemas: temp schema, explicit schemas, search_path and the per-text cache
    ("CREATE TABLE pg_temp.customers (id int, ssn text)", "refused"),
    ("CREATE VIEW pg_temp.customers AS SELECT 1 AS id", "refused"),
    ("CREATE TABLE pg_temp.rt5_tt (id int, ssn text)", "runs"),
    ("ALTER TABLE rt5_tt RENAME TO customers", "refused"),
    ("ALTER TABLE pg_temp.rt5_tt RENAME TO CUSTOMERS", "refused"),
    ("CREATE SCHEMA rt5_s", "either"),
    ("SELECT reverse(ssn) FROM public.customers", "refused"),
    ("SELECT reverse(ssn) FROM pg_catalog.customers", "either"),
    ("SELECT reverse(ssn) FROM information_schema.customers", "either"),
    ("SELECT reverse(ssn) FROM \"public\".\"customers\"", "refused"),
    ("SELECT id, ssn FROM customers WHERE id = 1", "runs"),
    ("SET search_path = pg_catalog", "runs"),
    ("SELECT id, ssn FROM customers WHERE id = 1", "either"),
    ("SELECT reverse(ssn) FROM customers", "refused"),
    ("SET search_path = public, pg_temp", "runs"),
    ("SELECT id, ssn FROM customers WHERE id = 1", "runs"),
    ("RESET search_path", "runs"),
    # DDL in a transaction: the catalog reader (another connection) cannot see it yet
    ("BEGIN", "runs"),
    ("CREATE VIEW rt5_tv AS SELECT id, name FROM customers", "runs"),
    ("SELECT * FROM rt5_tv", "runs"),
    ("CREATE OR REPLACE VIEW rt5_tv AS SELECT id, name, ssn FROM customers", "refused"),
    ("ALTER VIEW rt5_tv RENAME COLUMN name TO ssn", "either"),
    ("SELECT reverse(ssn) FROM rt5_tv", "either"),
    ("ALTER TABLE rt5_t RENAME COLUMN ssn TO s2", "runs"),
    ("SELECT reverse(s2) FROM rt5_t", "runs"),
    ("ROLLBACK", "runs"),
    ("SELECT reverse(ssn) FROM rt5_t", "runs"),
    # prepared statements made before a DDL run against the catalog of their execution
    ("CREATE VIEW rt5_pv AS SELECT id, name FROM customers", "runs"),
    ("PREPARE rt5_p AS SELECT * FROM rt5_pv", "runs"),
    ("PREPARE rt5_q AS SELECT reverse(name) FROM rt5_pv", "runs"),
    ("CREATE OR REPLACE VIEW rt5_pv AS SELECT id, name, email FROM customers", "refused"),
    ("EXECUTE rt5_p", "runs"),
    ("EXECUTE rt5_q", "runs"),
    ("PREPARE rt5_w AS WITH w AS (UPDATE customers SET note = ssn WHERE id = 1 RETURNING id) "
     "SELECT * FROM w", "refused"),
]
ROUND5_MYSQL = [
    # multi-table DELETE and UPDATE naming customers first, LOAD XML, TABLE, VALUES ROW
    ("DELETE c FROM customers c, notes n WHERE c.ssn = '000-00-0000' AND n.id = 1", "runs"),
    ("DELETE c FROM customers c JOIN rt5_g g ON c.ssn = g.s WHERE g.id = 1", "refused"),
    ("DELETE n FROM notes n JOIN customers c ON c.email = 'ada@example.com' WHERE n.id = 999",
     "runs"),
    ("UPDATE customers c JOIN rt5_g g ON g.id = c.id SET c.email = g.e WHERE g.id = 1", "refused"),
    ("UPDATE customers c, rt5_g g SET c.ssn = g.s WHERE g.id = 1 AND c.id = 2", "refused"),
    ("UPDATE customers c JOIN rt5_g g ON c.ssn = g.s SET c.note = 'x' WHERE g.id = 1", "refused"),
    ("UPDATE rt5_g g JOIN customers c ON c.id = g.id SET g.s = c.ssn WHERE g.id = 1", "refused"),
    ("UPDATE rt5_g g, customers c SET g.e = c.email WHERE g.id = c.id", "refused"),
    ("UPDATE rt5_g g JOIN customers c ON c.ssn = g.s SET g.e = 'hit' WHERE g.id = 1", "refused"),
    ("INSERT INTO customers SET id = 900, name = 'p', ssn = '123-45-6789'", "refused"),
    ("REPLACE INTO customers SET id = 999, name = 'p'", "either"),
    ("INSERT INTO customers (id, name) VALUES (1, 'x') ON DUPLICATE KEY UPDATE email = 'g@x.com'",
     "refused"),
    ("INSERT INTO rt5_t (id, ssn) SELECT id, name FROM customers ON DUPLICATE KEY UPDATE "
     "ssn = (SELECT ssn FROM customers LIMIT 1)", "refused"),
    ("WITH x AS (SELECT 1) UPDATE customers SET email = 'g@x.com' WHERE id = 1", "refused"),
    ("LOAD XML LOCAL INFILE '/etc/hostname' INTO TABLE notes", "refused"),
    ("LOAD XML INFILE '/etc/hostname' INTO TABLE customers ROWS IDENTIFIED BY '<r>'", "refused"),
    ("TABLE customers", "either"),
    ("SELECT reverse(ssn) FROM (TABLE customers) t", "refused"),
    ("VALUES ROW(1, 2)", "either"),
    ("SELECT * FROM customers WHERE ROW(ssn, id) = ROW('123-45-6789', 1)", "refused"),
    # other databases: not granted, unknown to the catalog, or information_schema
    ("SELECT reverse(ssn) FROM mysql.customers", "either"),
    ("SELECT reverse(ssn) FROM information_schema.customers", "either"),
    ("SELECT c.id FROM customers c JOIN mysql.user u ON u.User = c.ssn", "refused"),
    ("CREATE TABLE information_schema.customers (id int)", "refused"),
    ("CREATE TEMPORARY TABLE customers (id int, ssn varchar(20))", "refused"),
    ("CREATE TEMPORARY TABLE rt5_tmp (id int, ssn varchar(20))", "runs"),
    ("ALTER TABLE rt5_tmp RENAME TO Customers", "refused"),
    # DDL through PREPARE/EXECUTE: no catalog reload, so the new relation is unknown (masked)
    ("PREPARE rt5_d FROM 'CREATE VIEW rt5_ev AS SELECT id, name FROM customers'", "runs"),
    ("EXECUTE rt5_d", "runs"),
    ("SELECT * FROM rt5_ev", "runs"),
    ("SELECT reverse(name) FROM rt5_ev", "either"),
    ("PREPARE rt5_e FROM 'CREATE OR REPLACE VIEW rt5_ev AS SELECT id, ssn FROM customers'", "refused"),
    ("PREPARE rt5_f FROM 'ALTER TABLE rt5_t RENAME TO customers'", "refused"),
    ("PREPARE rt5_g2 FROM 'RENAME TABLE rt5_t TO CUSTOMERS'", "refused"),
    # the per-text cache across USE: the same text in another current database
    ("SELECT id, ssn FROM customers WHERE id = 1", "runs"),
    ("USE information_schema", "either"),
    ("SELECT id, ssn FROM customers WHERE id = 1", "either"),
    ("SELECT reverse(ssn) FROM customers", "refused"),
]

# Round 6 (after ca1b505): how sqlglot's parse can differ from the server's (precedence, casts,
# operators, literal forms, quoting), whole-row and record references, temporary objects and
# cursors, prepared parameters, MySQL EXPLAIN EXTENDED notes of const tables (the optimizer
# prints the row's values), SHOW WARNINGS, SIGNAL and PROCEDURE ANALYSE. (Numeric EXECUTE … USING
# parameters against masked columns, and GET DIAGNOSTICS copying withheld warnings into user
# variables, were bypasses: reported, not listed.)
ROUND6_BOTH = [
    ("SELECT name FROM customers WHERE NOT ssn = '1'", "runs"),
    ("SELECT name FROM customers WHERE (ssn) = '1'", "runs"),
    ("SELECT name FROM customers WHERE ssn = '1' IS NULL", "runs"),
    ("SELECT name FROM customers WHERE (ssn = '1') IS NOT TRUE", "runs"),
    ("SELECT name FROM customers WHERE ssn = ('1')", "refused"),
    ("SELECT name FROM customers WHERE ssn = CONCAT('1', '2')", "refused"),
    ('SELECT name FROM customers WHERE ssn = \'1\' COLLATE "C"', "refused"),
    ("SELECT name FROM customers WHERE ssn IN (SELECT '1')", "refused"),
    ("SELECT name FROM customers WHERE ssn = ANY (SELECT '1')", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' OR ssn > '2'", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' AND id = 1 OR ssn > '5'", "refused"),
    ("SELECT JSON_OBJECT('s', ssn) FROM customers", "refused"),
    ("SELECT name FROM customers WHERE (ssn, id) IN (('1', 1))", "refused"),
    ("SELECT name FROM customers WHERE ROW(ssn) = ROW('1')", "refused"),
    ("SELECT count(*) FROM customers WHERE ssn IS NOT NULL", "runs"),
    ("SELECT count(DISTINCT ssn) FROM customers", "runs"),
    ("SELECT count(ssn), count(email), count(card_number) FROM customers", "runs"),
    ("SELECT count(NULLIF(ssn, '1')) FROM customers", "refused"),
    ("SELECT count(CASE WHEN ssn > '2' THEN 1 END) FROM customers", "refused"),
    ("SELECT sum(CASE WHEN ssn = '1' THEN 1 ELSE 0 END) FROM customers", "runs"),
    ("SELECT name FROM customers WHERE ssn = 'a' LIMIT 1 OFFSET 0", "runs"),
    ("SELECT name FROM customers LIMIT 1 OFFSET 0", "runs"),
    ("SELECT id, ssn FROM customers WHERE id = 1 FOR UPDATE", "runs"),
    ("SELECT reverse(ssn) FROM (customers c JOIN notes n ON c.id = n.id)", "refused"),
    ("SELECT x.ssn FROM (SELECT c.ssn FROM customers c) x WHERE x.ssn LIKE '1%'", "refused"),
    ("SELECT x.s FROM (SELECT ssn AS s FROM customers) x ORDER BY x.s", "refused"),
    ("SELECT name FROM customers WHERE EXISTS (SELECT 1 FROM notes WHERE notes.body = "
     "customers.ssn)", "refused"),
    ("SELECT name FROM customers c WHERE c.ssn = c.ssn", "refused"),
    ("SELECT name FROM customers c WHERE c.ssn <> c.email", "refused"),
    ("SELECT c1.name FROM customers c1 JOIN customers c2 ON c1.ssn = c2.ssn", "refused"),
    ("SELECT name FROM customers WHERE ssn = ?", "either"),
    ("SELECT name FROM customers WHERE id IN (SELECT id FROM customers WHERE ssn > '2')", "refused"),
    ("SELECT name FROM customers WHERE ssn NOT BETWEEN '1' AND '2'", "refused"),
    ("SELECT name FROM customers WHERE ssn IN ('1', '2') AND email IN ('a', 'b')", "runs"),
    ("SELECT id FROM customer_view WHERE tax_id LIKE '1%'", "refused"),
    ("SELECT id, tax_id, mail FROM customer_view", "runs"),
    ("SELECT reverse(mail) FROM customer_view", "refused"),
    ("SELECT id FROM customer_view WHERE mail = 'X'", "runs"),
    ("SELECT id FROM customer_view ORDER BY tax_id", "refused"),
]
ROUND6_POSTGRES = [
    ("BEGIN; DECLARE rt6_c SCROLL CURSOR FOR SELECT id, ssn FROM customers; MOVE ABSOLUTE 0 IN "
     "rt6_c; FETCH BACKWARD ALL FROM rt6_c; ROLLBACK", "runs"),
    ("BEGIN; DECLARE rt6_d CURSOR FOR SELECT reverse(ssn) FROM customers; FETCH ALL FROM rt6_d; "
     "ROLLBACK", "refused"),
    ("SELECT xmlforest(c.ssn) FROM customers c", "refused"),
    ("SELECT xmlforest(c.*) FROM customers c", "refused"),
    ("SELECT name FROM customers WHERE ssn[1:3] = '123'", "refused"),
    ("SELECT name FROM customers c WHERE c = c", "refused"),
    ("SELECT name FROM customers WHERE ssn = $$123-45-6789$$", "refused"),
    ("SELECT name FROM customers WHERE ssn = E'123\\05545-6789'", "refused"),
    ("SELECT name FROM customers WHERE ssn OPERATOR(pg_catalog.~~) '1%'", "refused"),
    ("SELECT name FROM customers WHERE ssn OPERATOR(pg_catalog.=) '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = ANY('{123-45-6789,234-56-7890}')", "refused"),
    ("SELECT name FROM customers WHERE ssn = ANY(ARRAY['1','2'])", "refused"),
    ("SELECT name FROM customers WHERE ssn = SOME('{1,2}')", "refused"),
    ("SELECT name FROM customers WHERE ssn IN (VALUES ('1'),('2'))", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' IS NOT TRUE", "runs"),
    ("SELECT name FROM customers WHERE (ssn = '1') IS UNKNOWN", "runs"),
    ("SELECT name FROM customers WHERE ssn IS DISTINCT FROM '1'", "runs"),
    ("SELECT name FROM customers WHERE ssn IS NOT DISTINCT FROM '1'", "runs"),
    ("SELECT name FROM customers WHERE ssn IS NORMALIZED", "refused"),
    ("SELECT name FROM customers WHERE ssn IS JSON", "refused"),
    ("SELECT name FROM customers WHERE ssn = U&'\\0031'", "refused"),
    ("SELECT name FROM customers WHERE ssn = B'0101'", "refused"),
    ("SELECT name FROM customers WHERE ssn = X'1F'", "either"),
    ("SELECT name FROM customers WHERE ssn = 'a' 'b'", "refused"),
    ("SELECT name FROM customers WHERE ssn = '123-45-' '6789'", "refused"),
    ("SELECT name FROM customers WHERE customers.ssn = :'x'", "refused"),
    ("SELECT name FROM customers WHERE ssn = text '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = (text '1')", "refused"),
    ("SELECT name FROM customers WHERE ssn = varchar '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = interval '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = current_user", "refused"),
    ("SELECT name FROM customers WHERE ssn = CURRENT_SCHEMA", "refused"),
    ("SELECT name FROM customers WHERE ssn = name", "refused"),
    ('SELECT name FROM customers WHERE "ssn" = \'x\'', "runs"),
    ('SELECT name FROM customers WHERE "SSN" = \'x\'', "either"),
    ("SELECT name FROM customers c WHERE (c).ssn LIKE '1%'", "refused"),
    ("SELECT (c).ssn FROM customers c", "refused"),
    ("SELECT reverse((c).ssn) FROM customers c", "refused"),
    ("SELECT (customers).ssn FROM customers", "refused"),
    ("SELECT c.ssn.length FROM customers c", "either"),
    ("SELECT length(ssn::text) FROM customers", "refused"),
    ("SELECT ssn::text[] FROM customers", "refused"),
    ("SELECT (c.*)::text FROM customers c", "refused"),
    ("SELECT c::text FROM customers c", "refused"),
    ("SELECT to_jsonb(c) - 'id' FROM customers c", "refused"),
    ("SELECT jsonb_populate_record(null::customers, to_jsonb(c)) FROM customers c", "refused"),
    ("SELECT (jsonb_populate_record(null::notes, jsonb_build_object('body', c.ssn))).body FROM "
     "customers c", "refused"),
    ("SELECT * FROM jsonb_populate_record(null::customers, '{}')", "runs"),
    ("SELECT row(c.*) FROM customers c", "refused"),
    ("SELECT ROW(c.*)::text FROM customers c", "refused"),
    ("SELECT c FROM customers c", "runs"),
    ("SELECT * FROM customers c, LATERAL row_to_json(c) j", "refused"),
    ("SELECT j FROM customers c, LATERAL row_to_json(c) j", "refused"),
    ("SELECT j.* FROM customers c, LATERAL jsonb_each_text(to_jsonb(c)) j", "refused"),
    ("SELECT j.value FROM customers c, jsonb_each_text(to_jsonb(c)) j", "refused"),
    ("SELECT * FROM customers c, jsonb_each_text(to_jsonb(c))", "refused"),
    ("SELECT key, value FROM customers c, jsonb_each_text(to_jsonb(c))", "refused"),
    ("SELECT * FROM ROWS FROM (jsonb_each_text((SELECT to_jsonb(c) FROM customers c LIMIT 1)))", "refused"),
    ("SELECT t FROM customers AS t(a,b,c,d,e,f)", "runs"),
    ("SELECT customers.* IS NOT NULL FROM customers", "runs"),
    ("SELECT name FROM customers WHERE customers IS NOT NULL", "runs"),
    ("SELECT name FROM customers c WHERE c > ROW(1, 'a', 'b', '1', 'x', 'y')", "refused"),
    ("SELECT name FROM customers c WHERE c = ROW(1, 'Ada Lovelace', 'ada@example.com', "
     "'123-45-6789', '4111111111111111', 'prefers email')", "refused"),
    ("SELECT name FROM customers c ORDER BY c", "refused"),
    ("SELECT DISTINCT c FROM customers c", "refused"),
    ("SELECT count(DISTINCT c) FROM customers c", "runs"),
    ("SELECT name FROM customers c WHERE c::text LIKE '%1%'", "refused"),
    ("SELECT num_nonnulls(c.*) FROM customers c", "refused"),
    ("SELECT pg_column_size(c.*) FROM customers c", "refused"),
    ("SELECT pg_column_size(ssn) FROM customers", "refused"),
    ("SELECT octet_length(c::text) FROM customers c", "refused"),
    ("SELECT hashtext(c::text) FROM customers c", "refused"),
    ("SELECT id, ssn FROM customers TABLESAMPLE SYSTEM (100)", "runs"),
    ("SELECT name FROM customers WHERE ssn = 'x' OR true", "runs"),
    ("SELECT name FROM customers WHERE ssn NOT IN (NULL)", "runs"),
    ("SELECT name FROM customers WHERE ssn = ALL('{1}')", "refused"),
    ("CREATE TEMP VIEW rt6_tv AS SELECT ssn FROM customers", "refused"),
    ("CREATE TEMP VIEW rt6_tv2 AS SELECT id FROM customers WHERE ssn LIKE '1%'", "refused"),
    ("CREATE TEMP TABLE rt6_t (id int, ssn text)", "runs"),
    ("INSERT INTO rt6_t VALUES (1, 'x')", "runs"),
    ("SELECT reverse(ssn) FROM rt6_t", "runs"),
    ("CREATE TEMP VIEW rt6_tv3 AS SELECT c.id FROM customers c", "runs"),
    ("SELECT * FROM rt6_tv3", "runs"),
    ("PREPARE rt6_p(text) AS SELECT id FROM customers WHERE ssn = $1", "runs"),
    ("EXECUTE rt6_p(123)", "runs"),
    ("EXECUTE rt6_p('1' || '23')", "refused"),
    ("EXECUTE rt6_p((SELECT body FROM notes LIMIT 1))", "either"),
    ("EXECUTE rt6_p(current_user)", "refused"),
    ("PREPARE rt6_q(int) AS SELECT id FROM customers WHERE ssn = $1", "either"),
    ("PREPARE rt6_r AS SELECT id FROM customers WHERE ssn = $1::text", "refused"),
    ("PREPARE rt6_s AS SELECT id FROM customers WHERE ssn IN ($1, $2)", "runs"),
    ("EXECUTE rt6_s('a', 'b')", "runs"),
    ("SELECT set_config('search_path', 'pg_catalog', false)", "runs"),
    ("SELECT reverse(ssn) FROM customers", "refused"),
    ("SELECT set_config('search_path', 'public', false)", "runs"),
    ("SELECT name FROM customers WHERE ssn = 'a' ->> 'b'", "refused"),
    ('SELECT name FROM customers WHERE ssn = \'{"a":1}\' -> \'a\'', "refused"),
    ("SELECT name FROM customers WHERE ssn @> 'a'", "refused"),
    ("SELECT name FROM customers WHERE ssn = 'a' AT TIME ZONE 'UTC'", "refused"),
    ("SELECT name FROM customers WHERE ssn = 'a'::text", "refused"),
    ("SELECT name FROM customers WHERE ssn = CAST('a' AS text)", "refused"),
    ("SELECT name FROM customers WHERE ssn = ('a')", "refused"),
    ("SELECT name FROM customers WHERE ssn = + 'a'", "either"),
    ("SELECT name FROM customers WHERE ssn = 'a' IS TRUE", "runs"),
    ("SELECT name FROM customers WHERE ssn IN ('a') IS NOT FALSE", "runs"),
    ("SELECT name FROM customers WHERE ssn = 'a' = true", "either"),
    ("SELECT name FROM customers WHERE ssn = 'a' AND 1/(CASE WHEN ssn = 'x' THEN 0 ELSE 1 END) = 1", "runs"),
    ("SELECT name FROM customers WHERE 1/(ssn = '123-45-6789')::int = 1", "either"),
    ("SELECT CASE WHEN ssn = '123-45-6789' THEN 1/0 END FROM customers", "either"),
    ("SELECT name FROM customers WHERE ssn = 'a' LIMIT (SELECT count(*) FROM customers WHERE ssn > "
     "'2')", "refused"),
    ("SELECT name FROM customers LIMIT (SELECT count(*) FROM customers WHERE ssn = 'x')", "runs"),
    ("SELECT count(*) FILTER (WHERE ssn = '1') FROM customers", "runs"),
    ("SELECT count(*) FILTER (WHERE ssn > '1') FROM customers", "refused"),
    ("SELECT count(ssn > '1') FROM customers", "refused"),
    ("SELECT count(DISTINCT ssn > '2') FROM customers", "refused"),
    ("SELECT count(*) FROM customers GROUP BY ssn = '1'", "runs"),
    ("SELECT name FROM customers WHERE ssn IS NULL = (id > 2)", "runs"),
    ("SELECT EXISTS (SELECT 1 FROM customers WHERE ssn = '1') FROM notes", "runs"),
    ("SELECT name FROM customers WHERE (ssn = '1') = (SELECT true)", "runs"),
    ('SELECT name FROM customers WHERE ssn = \'a\' COLLATE "und-x-icu"', "refused"),
    ("SELECT id FROM customers FOR UPDATE SKIP LOCKED", "runs"),
    ("TABLE customers", "runs"),
    ("SELECT * FROM ONLY customers", "runs"),
    ("SELECT * FROM customers*", "runs"),
    ("SELECT reverse(ssn) FROM customers*", "refused"),
    ("SELECT reverse(ssn) FROM ONLY customers", "refused"),
    ("SELECT reverse(ssn) FROM ONLY (customers)", "refused"),
    ('SELECT reverse("ssn") FROM "customers"', "refused"),
    ('SELECT reverse(ssn) FROM customers AS "c" WHERE "c".id = 1', "refused"),
    ("SELECT reverse(public.customers.ssn) FROM public.customers", "refused"),
    ("SELECT reverse(x.ssn) FROM (customers) x", "refused"),
    ("SELECT reverse(c.ssn) FROM (customers c JOIN notes n ON c.id = n.id) j", "refused"),
    ("SELECT j.ssn FROM (customers c JOIN notes n ON c.id = n.id) j", "runs"),
    ("SELECT reverse(j.ssn) FROM (customers c CROSS JOIN notes n) AS j", "refused"),
]
ROUND6_MYSQL = [
    ("EXPLAIN EXTENDED SELECT id FROM customers WHERE id = 1", "runs"),
    ("EXPLAIN SELECT name FROM customers WHERE id = 1 AND ssn = '123-45-6789'", "runs"),
    ("EXPLAIN FORMAT=JSON SELECT name, ssn FROM customers WHERE id = 1", "runs"),
    ("EXPLAIN EXTENDED SELECT c.name FROM customers c JOIN notes n ON n.body = c.name WHERE c.id = "
     "1", "runs"),
    ("EXPLAIN EXTENDED SELECT c.name FROM customers c, notes n WHERE c.id = 1 AND n.id = c.id", "runs"),
    ("EXPLAIN EXTENDED SELECT name FROM customers WHERE id = 1 AND ssn IS NOT NULL", "runs"),
    ("EXPLAIN EXTENDED SELECT ssn FROM customers WHERE id = 1", "runs"),
    ("ANALYZE FORMAT=JSON SELECT ssn FROM customers WHERE id = 1", "runs"),
    ("EXPLAIN EXTENDED SELECT count(ssn) FROM customers WHERE id = 1", "runs"),
    ("PREPARE rt6_s6 FROM 'SELECT id, name FROM customers WHERE ssn = ?'", "runs"),
    ("PREPARE rt6_s7 FROM 'SELECT id FROM customers WHERE ssn IN (?, ?)'", "runs"),
    ("SELECT id FROM customers WHERE ssn = '123' + 0", "refused"),
    ("SELECT id FROM customers WHERE ssn = X'313233'", "runs"),
    ("SELECT id FROM customers WHERE ssn = 0x313233", "runs"),
    ("SELECT id FROM customers WHERE ssn = b'110001'", "refused"),
    ("SELECT id FROM customers WHERE ssn = _binary'123'", "refused"),
    ("SELECT id FROM customers WHERE ssn = N'123'", "refused"),
    ("SELECT id FROM customers WHERE ssn = '1' COLLATE utf8mb4_bin", "refused"),
    ("SELECT id FROM customers WHERE ssn = BINARY '123-45-6789'", "refused"),
    ("SELECT id FROM customers WHERE BINARY ssn = '123-45-6789'", "refused"),
    ("SELECT id FROM customers WHERE ssn = DATE '2020-01-01'", "refused"),
    ("SELECT id FROM customers WHERE ssn = TIMESTAMP '2020-01-01 00:00:00'", "refused"),
    ("SELECT id FROM customers WHERE ssn = {d '2020-01-01'}", "refused"),
    ("SELECT id FROM customers WHERE ssn = -'1'", "refused"),
    ("SELECT id FROM customers WHERE !ssn = '1'", "refused"),
    ("SELECT id FROM customers WHERE NOT ssn = '1'", "runs"),
    ("SELECT id FROM customers WHERE ssn = '1' || ssn = '2'", "runs"),
    ("SELECT id FROM customers WHERE ssn = '1' = 0", "runs"),
    ("SELECT id FROM customers WHERE ssn = ('1')", "refused"),
    ("SELECT id FROM customers WHERE ssn <=> NULL", "runs"),
    ("SELECT id FROM customers WHERE ssn IS TRUE", "refused"),
    ("SELECT id FROM customers WHERE ssn IS NOT FALSE", "refused"),
    ("SELECT id FROM customers WHERE (ssn) = '1'", "runs"),
    ("SELECT id FROM customers WHERE ssn = '1' IS NULL", "runs"),
    ("SELECT id, ssn IN ('123-45-6789') AS h FROM customers", "runs"),
    ("SELECT JSON_OBJECTAGG(id, ssn) FROM customers", "refused"),
    ("SELECT JSON_OBJECTAGG(ssn, id) FROM customers", "refused"),
    ("SELECT JSON_ARRAYAGG(ssn) FROM customers", "refused"),
    ("SELECT name FROM customers WHERE id = 1 PROCEDURE ANALYSE()", "refused"),
    ("SELECT ssn FROM customers PROCEDURE ANALYSE()", "refused"),
    ("SHOW CREATE VIEW customer_view", "runs"),
    ("CHECKSUM TABLE customers", "refused"),
    ("CHECKSUM TABLE customers EXTENDED", "refused"),
    ("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'x'", "either"),
    ("SELECT name FROM customers WHERE ssn = '123-45-67890000'", "runs"),
    ("SELECT name FROM customers WHERE ssn = 'ADA@EXAMPLE.COM'", "runs"),
    ("SELECT ssn FROM customers WHERE id = 1 INTO OUTFILE '/tmp/rt6_out'", "refused"),
    ("SELECT ssn FROM customers WHERE id = 1 INTO DUMPFILE '/tmp/rt6_out2'", "refused"),
    ("SELECT id, `ssn` FROM customers", "runs"),
    ("SELECT id, customers.`ssn` FROM customers", "runs"),
    ("SELECT reverse(`SSN`) FROM customers", "refused"),
    ("SELECT reverse(customers . ssn) FROM customers", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' | 0", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' XOR ssn = '2'", "runs"),
    ("SELECT name FROM customers WHERE ssn IN ('1') = 0", "runs"),
    ("SELECT name FROM customers WHERE ssn = '1' DIV 1", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' MOD 1", "refused"),
    ("SELECT name FROM customers WHERE ssn SOUNDS LIKE '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' COLLATE utf8mb4_general_ci", "refused"),
    ("SELECT name FROM customers WHERE ssn = _utf8mb4'1' COLLATE utf8mb4_bin", "refused"),
    ("SELECT name FROM customers WHERE MATCH(ssn) AGAINST ('123')", "refused"),
    ("SELECT name FROM customers WHERE ssn = (SELECT '1')", "refused"),
    ("SELECT name FROM customers WHERE ssn = 1e0", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1'e0", "refused"),
    ("SELECT name FROM customers WHERE ssn = .1", "refused"),
    ("EXPLAIN EXTENDED SELECT c.name FROM customers c JOIN notes n ON n.id = c.id WHERE c.ssn = "
     "'123-45-6789'", "runs"),
    ("EXPLAIN SELECT name FROM customers WHERE id = 1 AND ssn = '1'", "runs"),
    ("EXPLAIN SELECT name FROM customers FORCE INDEX (ssn) WHERE ssn IS NOT NULL", "runs"),
    ("EXPLAIN EXTENDED SELECT id, ssn, email, card_number FROM customers WHERE id = 2; SHOW "
     "WARNINGS", "runs"),
    ("EXPLAIN EXTENDED SELECT * FROM customers WHERE id = 3; SHOW WARNINGS", "runs"),
]


# Round 8: the lookup budget (IN lists with duplicates, OR chains, negations, comparisons inside
# EXISTS, CTEs, FILTER, prepared statements and cursors), odd but valid syntax (TABLE ONLY, column
# alias lists, ROWS FROM, LATERAL … WITH ORDINALITY, GROUPING SETS, WITH TIES, named windows,
# ARRAY(SELECT …)), MySQL session-state functions (LAST_INSERT_ID(expr), FOUND_ROWS, ROW_COUNT,
# SET STATEMENT, sql_select_limit), join hints, literal forms and parameters of EXECUTE.
ROUND8_BOTH = [
    ("SELECT name FROM customers WHERE ssn IN ('1', '1', '1')", "runs"),
    ("SELECT name FROM customers WHERE ssn NOT IN ('1', '2') AND ssn <> '3'", "runs"),
    ("SELECT name FROM customers WHERE ssn IN ('1', '1') OR ssn = '2' OR ssn IN ('3')", "runs"),
    ("SELECT name FROM customers WHERE EXISTS (SELECT 1 FROM notes n WHERE customers.ssn IN ('1', "
     "'2'))", "runs"),
    ("WITH q AS (SELECT id FROM customers WHERE ssn = '1') SELECT * FROM q", "runs"),
    ("SELECT name FROM customers WHERE (ssn, name) IN (('1', 'a'))", "refused"),
    ("SELECT name FROM customers WHERE ROW(ssn, 1) = ROW('1', 1)", "refused"),
    ("SELECT name FROM customers WHERE ssn = NULL", "runs"),
    ("SELECT name FROM customers WHERE ssn IN (NULL, NULL)", "runs"),
    ("SELECT name FROM customers WHERE ssn = DATE '2020-01-01'", "refused"),
    ("SELECT name FROM customers WHERE ssn = TRUE", "refused"),
    ("SELECT name FROM customers WHERE ssn = '1' '0'", "refused"),
    ("SELECT name FROM customers GROUP BY GROUPING SETS ((name), (ssn))", "refused"),
    ("SELECT name FROM customers GROUP BY ROLLUP (ssn, name)", "refused"),
    ("SELECT name, row_number() OVER w FROM customers WINDOW w AS (PARTITION BY ssn)", "refused"),
    ("SELECT (SELECT ssn) FROM customers", "refused"),
    ("SELECT reverse((SELECT ssn)) FROM customers", "refused"),
    ("SELECT name FROM customers c WHERE EXISTS (SELECT 1 FROM customers d WHERE d.ssn = c.ssn "
     "AND d.id <> c.id)", "refused"),
    ("SELECT name FROM customers WHERE id = 1 AND ssn IN (SELECT body FROM notes)", "refused"),
    ("UPDATE customers SET name = name WHERE ssn LIKE '1%'", "refused"),
    ("UPDATE customers SET name = name WHERE ssn = '1'", "runs"),
    ("DELETE FROM customers WHERE ssn > '2' AND 1 = 0", "refused"),
]

ROUND8_POSTGRES = [
    ("SELECT name FROM customers WHERE ssn = ANY('{123-45-6789,234-56-7890}')", "refused"),
    ("SELECT name FROM customers WHERE ssn = ANY(ARRAY['1', '2'])", "refused"),
    ("SELECT name FROM customers WHERE ssn = SOME('{1,2,3}')", "refused"),
    ("PREPARE rt8_arr(text[]) AS SELECT name FROM customers WHERE ssn = ANY($1)", "refused"),
    ("PREPARE rt8_p(text) AS SELECT name FROM customers WHERE ssn = $1 OR ssn = '1' OR ssn IN "
     "('a', 'b')", "runs"),
    ("EXECUTE rt8_p('1')", "runs"),
    ("EXECUTE rt8_p(1)", "runs"),
    ("EXECUTE rt8_p((SELECT ssn FROM customers WHERE id = 2))", "either"),
    ("DECLARE rt8_cc CURSOR WITH HOLD FOR SELECT name FROM customers WHERE ssn IN ('1', '2')", "runs"),
    ("FETCH ALL FROM rt8_cc", "runs"),
    ("CLOSE rt8_cc", "runs"),
    ("DEALLOCATE rt8_p", "runs"),
    ("TABLE ONLY customers", "runs"),
    ("SELECT * FROM ONLY customers", "runs"),
    ("SELECT a, b, c, d FROM customers AS c(a, b, c, d)", "runs"),
    ("SELECT reverse(d) FROM customers AS c(a, b, c, d)", "refused"),
    ("SELECT reverse(e) FROM ONLY customers AS c(a, b, c, d, e)", "refused"),
    ("SELECT reverse(x.e) FROM (TABLE customers) AS x(a, b, c, d, e)", "refused"),
    ("SELECT c.name FROM ROWS FROM (generate_series(1, 2)) AS g(x), customers c WHERE g.x = c.id",
     "either"),
    ("SELECT reverse(t.s) FROM customers c, LATERAL unnest(ARRAY[c.ssn]) WITH ORDINALITY AS t(s, n)",
     "refused"),
    ("SELECT t.n FROM customers c, LATERAL unnest(ARRAY[c.ssn]) WITH ORDINALITY AS t(s, n) "
     "WHERE t.s LIKE '1%'", "refused"),
    ("SELECT count(*) FILTER (WHERE ssn LIKE '1%') FROM customers", "refused"),
    ("SELECT count(*) FILTER (WHERE ssn = '123-45-6789') FROM customers", "runs"),
    ("SELECT ARRAY(SELECT ssn FROM customers)", "refused"),
    ("SELECT name FROM customers ORDER BY id FETCH FIRST 1 ROWS WITH TIES", "runs"),
    ("SELECT name FROM customers ORDER BY ssn FETCH FIRST 1 ROWS WITH TIES", "refused"),
    ("SELECT name FROM customers WHERE ssn = E'\\x31'", "refused"),
    ("SELECT name FROM customers WHERE ssn = $$123-45-6789$$", "refused"),
    ("SELECT name FROM customers WHERE ssn = U&'\\0031'", "refused"),
    ("SELECT name FROM customers WHERE ssn = B'0101'", "refused"),
    ("SELECT name FROM customers WHERE ssn IS DISTINCT FROM '1'", "runs"),
    ("SELECT name FROM customers WHERE ssn IS NOT DISTINCT FROM '1'", "runs"),
    ("SELECT name FROM customers WHERE ssn OPERATOR(pg_catalog.~~) '1%'", "refused"),
    ("SELECT name FROM customers WHERE ssn OPERATOR(pg_catalog.=) '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn ^@ '1'", "refused"),
    ("PREPARE rt8_px(text) AS SELECT $1 AS v", "runs"),
    ("EXECUTE rt8_px(cursor_to_xml('c'::refcursor, 1, false, false, '')::text)", "refused"),
    ("EXECUTE rt8_px(query_to_xml('select ssn from customers', true, true, '')::text)", "refused"),
    ("EXECUTE rt8_px(pg_catalog.pg_read_file('/etc/hostname'))", "refused"),
    ("DEALLOCATE rt8_px", "runs"),
]

ROUND8_MYSQL = [
    ("SELECT LAST_INSERT_ID(ssn) FROM customers", "refused"),
    ("SELECT name FROM customers WHERE id = LAST_INSERT_ID(CHAR_LENGTH(ssn))", "refused"),
    ("SELECT LAST_INSERT_ID(id) FROM customers WHERE ssn = '123-45-6789'", "runs"),
    ("SELECT LAST_INSERT_ID(), @@identity", "runs"),
    ("INSERT INTO notes (id, body) SELECT id, name FROM customers WHERE ssn = '1' ON DUPLICATE KEY "
     "UPDATE id = LAST_INSERT_ID(customers.ssn)", "refused"),
    ("INSERT INTO notes (id, body) SELECT c.id, c.name FROM customers c ON DUPLICATE KEY UPDATE "
     "body = c.ssn", "refused"),
    ("INSERT INTO notes (id, body) VALUES (1, 'x') ON DUPLICATE KEY UPDATE body = (SELECT ssn FROM "
     "customers WHERE id = 1)", "refused"),
    ("SELECT SQL_CALC_FOUND_ROWS name FROM customers WHERE ssn IN ('123-45-6789', '1') LIMIT 0",
     "runs"),
    ("SELECT FOUND_ROWS()", "runs"),
    ("SELECT SQL_CALC_FOUND_ROWS name FROM customers HAVING ssn LIKE '1%' LIMIT 0", "refused"),
    ("SELECT ROW_COUNT()", "runs"),
    ("SET STATEMENT max_statement_time=1 FOR SELECT reverse(ssn) FROM customers", "refused"),
    ("SET STATEMENT sql_select_limit=1 FOR SELECT name FROM customers WHERE ssn <> ''", "either"),
    ("SET sql_select_limit = 1", "runs"),
    ("SELECT name FROM customers WHERE ssn IN ('1', '2')", "runs"),
    ("SET sql_select_limit = DEFAULT", "runs"),
    ("SELECT STRAIGHT_JOIN c.name FROM customers c JOIN notes n ON n.id = c.id WHERE c.ssn = '1'",
     "runs"),
    ("SELECT c.name FROM customers c STRAIGHT_JOIN notes n ON n.body = c.ssn", "refused"),
    ("SELECT c.name FROM customers c STRAIGHT_JOIN customers d ON d.ssn = c.ssn", "refused"),
    ("SELECT name FROM customers USE INDEX (ssn) WHERE ssn <> ''", "runs"),
    ("SELECT name FROM customers IGNORE INDEX (PRIMARY) ORDER BY ssn", "refused"),
    ("SELECT HIGH_PRIORITY SQL_NO_CACHE SQL_BIG_RESULT name, ssn FROM customers", "runs"),
    ("SELECT ssn FROM customers PROCEDURE ANALYSE()", "refused"),
    ("SELECT name FROM customers WHERE ssn IN ('1', '1') OR ssn <=> '3'", "runs"),
    ("SELECT name FROM customers WHERE ssn = BINARY '1'", "refused"),
    ("SELECT name FROM customers WHERE BINARY ssn = '1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = x'313233'", "runs"),
    ("SELECT name FROM customers WHERE ssn = b'110001'", "refused"),
    ("SELECT name FROM customers WHERE ssn = _binary'1'", "refused"),
    ("SELECT name FROM customers WHERE ssn = {d '2020-01-01'}", "refused"),
    ("PREPARE rt8_s FROM 'SELECT ? AS v'", "runs"),
    ("EXECUTE rt8_s USING reverse(peek())", "either"),
    ("EXECUTE rt8_s USING (SELECT reverse(ssn) FROM customers WHERE id = 1)", "either"),
    ("PREPARE rt8_s2 FROM 'SELECT name FROM customers WHERE ssn IN (?, ?)'", "runs"),
    ("EXECUTE rt8_s2 USING '1', '2'", "either"),
    ("EXECUTE rt8_s2 USING '1', 2", "refused"),
    ("DEALLOCATE PREPARE rt8_s", "runs"),
    ("DEALLOCATE PREPARE rt8_s2", "runs"),
]


@pytest.fixture(scope="module")
def seeded() -> Iterator[dict[str, str]]:
    os.environ[PASSWORD_ENV] = "unused"
    for db in seeded_databases():
        os.environ[PASSWORD_ENV] = db["password"]
        yield db


def corpus(kind: str) -> list[tuple[str, str]]:
    if kind == "postgres":
        # round 3 ends shadowing customers (PostgreSQL) or in another database (MySQL): it runs last
        return (BOTH + POSTGRES + ROUND2_BOTH + ROUND2_POSTGRES + ROUND4_BOTH + ROUND4_POSTGRES
                + ROUND5_BOTH + ROUND5_POSTGRES + ROUND6_BOTH + ROUND6_POSTGRES + ROUND8_BOTH
                + ROUND8_POSTGRES + ROUND3_BOTH + ROUND3_POSTGRES)
    return (BOTH + MYSQL + ROUND2_BOTH + ROUND2_MYSQL + ROUND4_BOTH + ROUND4_MYSQL
            + ROUND5_BOTH + ROUND5_MYSQL + ROUND6_BOTH + ROUND6_MYSQL + ROUND8_BOTH + ROUND8_MYSQL
            + ROUND3_BOTH + ROUND3_MYSQL)


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_redteam_corpus(seeded: dict[str, str], kind: str) -> None:
    async with connected(kind, seeded) as conn:
        await check_corpus(conn, kind, corpus(kind))


async def test_round5_rule_qualified_by_database(seeded: dict[str, str]) -> None:
    """Rules naming the target's database; another database (granted) holds a same-named table and
    a view over the target's customers: the view stays masked, in and out of `USE`."""
    name, other = seeded["name"], f"rt5o_{uuid.uuid4().hex[:8]}"
    rules = (MaskingRule((f"{name}.customers.ssn",), "partial"),
             MaskingRule((f"{name}.customers.email",), "hash"))
    setup = [f"CREATE DATABASE {other}",
             f"CREATE TABLE {other}.customers (id int, ssn varchar(20))",
             f"CREATE VIEW {other}.cust_v AS SELECT id, ssn, email FROM {name}.customers",
             f"GRANT SELECT, SHOW VIEW ON {other}.* TO '{name}'@'127.0.0.1'"]
    with pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", autocommit=True) as admin, \
            admin.cursor() as cur:
        for sql in setup:
            cur.execute(sql)
    qualified = dataclasses.replace(target("mysql", seeded), masking=rules)
    conn = await open_sql_connection(qualified, SqlPolicy.for_target(qualified, b"k" * 32))
    try:
        await check_corpus(conn, "mysql", [
            (f"SELECT * FROM {other}.cust_v", "runs"),
            (f"SELECT reverse(ssn) FROM {other}.cust_v", "refused"),
            (f"SELECT id FROM {other}.cust_v WHERE ssn LIKE '1%'", "refused"),
            (f"SELECT reverse(ssn) FROM {name}.customers", "refused"),
            (f"USE {other}", "runs"),
            ("SELECT * FROM cust_v", "runs"),
            ("SELECT reverse(ssn) FROM cust_v", "refused"),
            ("SELECT reverse(email) FROM cust_v", "refused"),
            ("SELECT * FROM customers", "runs"),
            ("SELECT ssn FROM customers", "runs"),
            (f"SELECT c.id FROM {name}.customers c JOIN customers o ON o.ssn = c.ssn", "refused"),
            (f"USE {name}", "runs"),
            ("SELECT reverse(ssn) FROM customers", "refused"),
        ])
    finally:
        await conn.close()
        with pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", autocommit=True) as admin, \
                admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {other}")


async def test_round8_mysql_temporary_tables(seeded: dict[str, str]) -> None:
    """MariaDB temporary tables (invisible to the catalog's second connection) shadowing a table
    without masked columns, or copying customers' structure: masked values cannot get in, and the
    user's own guesses in them cannot be joined with masked columns."""
    name = seeded["name"]
    with pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", autocommit=True) as admin, \
            admin.cursor() as cur:
        cur.execute(f"GRANT CREATE TEMPORARY TABLES ON {name}.* TO '{name}'@'127.0.0.1'")
    async with connected("mysql", seeded) as conn:
        await check_corpus(conn, "mysql", [
            ("CREATE TEMPORARY TABLE notes (id int, body varchar(200), ssn varchar(20))", "runs"),
            ("INSERT INTO notes (id, body, ssn) SELECT id, name, ssn FROM customers", "refused"),
            ("INSERT INTO notes SELECT id, name, ssn FROM customers", "refused"),
            ("INSERT INTO notes (id, body, ssn) VALUES (1, 'a', '999-99-9999')", "runs"),
            ("SELECT n.id FROM notes n JOIN customers c ON c.ssn = n.ssn", "refused"),
            ("SELECT c.name FROM customers c WHERE c.ssn IN (SELECT body FROM notes)", "refused"),
            ("SELECT c.name FROM customers c WHERE EXISTS (SELECT 1 FROM notes n WHERE n.ssn = "
             "c.ssn)", "refused"),
            ("DROP TEMPORARY TABLE notes", "runs"),
            ("CREATE TEMPORARY TABLE rt8_t LIKE customers", "runs"),
            ("INSERT INTO rt8_t SELECT * FROM customers", "refused"),
            ("INSERT INTO rt8_t (id, name) SELECT id, name FROM customers", "runs"),
            ("SELECT c.name FROM customers c, rt8_t r WHERE c.ssn = r.ssn", "refused"),
            ("SELECT count(*) FROM customers c, rt8_t r WHERE c.ssn <=> r.ssn", "refused"),
            ("SELECT r.id FROM rt8_t r JOIN customers c USING (ssn)", "refused"),
            ("SELECT r.id FROM rt8_t r NATURAL JOIN customers c", "refused"),
            ("CREATE TEMPORARY TABLE rt8_v (id int, ssn varchar(20)) SELECT id, ssn FROM customers",
             "refused"),
            ("CREATE TEMPORARY TABLE rt8_u AS TABLE customers", "refused"),
            ("CREATE TEMPORARY TABLE customer_view (id int)", "refused"),
            ("CREATE TEMPORARY TABLE CUSTOMERS (id int)", "refused"),
            ("ALTER TABLE rt8_t RENAME TO customers", "refused"),
            ("RENAME TABLE rt8_t TO customers", "refused"),
        ])

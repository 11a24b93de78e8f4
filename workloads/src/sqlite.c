/*
 * sqlite: an embedded database (Debian's libsqlite3, linked statically):
 * inserts in transactions, indexed lookups, updates, then PRAGMA
 * integrity_check and a checksum over the whole table. The shared page
 * cache and journal pages are what a cluster sees.
 *
 * Check: the program keeps its own model of every row. Lookups must return
 * the model's values, integrity_check must say "ok", and a checksum over a
 * full scan must equal the checksum computed from the model.
 */
#include "common.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("rows", "2000", 10, 10000000, "rows inserted"),
	WL_INT_PARAM("batch", "100", 1, 1000000, "rows per transaction for inserts and updates"),
	WL_INT_PARAM("lookups", "2000", 0, 100000000, "random lookups through the index"),
	WL_INT_PARAM("updates", "500", 0, 100000000, "random updates through the index"),
	WL_ENUM_PARAM("journal", "delete", "delete,truncate,wal,memory", "journal_mode"),
	WL_STR_PARAM("db", "/tmp/wl-sqlite.db", "database file (put it on tmpfs)"),
	WL_INT_PARAM("seed", "1", 0, 1000000000, "seed of the random lookups and updates"),
	WL_PARAMS_END,
};

#define MAX_SAMPLES 4096

static sqlite3 *db;

static _Noreturn void db_fail(const char *what)
{
	fprintf(stderr, "sqlite: %s: %s\n", what, db ? sqlite3_errmsg(db) : "no database");
	wl_finish(false, "sqlite_error");
}

static void exec(const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "sqlite: %s: %s\n", sql, err ? err : "?");
		wl_finish(false, "sqlite_error");
	}
}

static sqlite3_stmt *prepare(const char *sql)
{
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		db_fail(sql);
	return st;
}

static void key_of(long long id, char out[32])
{
	snprintf(out, 32, "key-%016llx", (unsigned long long)wl_mix64((uint64_t)id));
}

static void body_of(long long id, char out[48])
{
	snprintf(out, 48, "body-%llu-%016llx", (unsigned long long)id,
		 (unsigned long long)wl_mix64((uint64_t)id * 31 + 7));
}

static uint64_t hash_text(const unsigned char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; s && *s; s++)
		h = (h ^ *s) * 1099511628211ull;
	return h;
}

static uint64_t row_hash(long long id, const char *k, long long v, const char *body)
{
	return wl_mix64((uint64_t)id ^ hash_text((const unsigned char *)k) * 3 ^ (uint64_t)v * 5 ^
			hash_text((const unsigned char *)body) * 7);
}

static void remove_files(const char *path)
{
	static const char *suffix[] = { "", "-journal", "-wal", "-shm" };
	char name[4096];

	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(name, sizeof(name), "%s%s", path, suffix[i]);
		unlink(name);
	}
}

int main(int argc, char **argv)
{
	wl_init("sqlite", params, argc, argv);
	long long rows = wl_int("rows"), batch = wl_int("batch");
	long long lookups = wl_int("lookups"), updates = wl_int("updates");
	const char *path = wl_str("db");
	struct wl_rng rng = { .state = (uint64_t)wl_int("seed") };
	long long *model = calloc((size_t)rows + 1, sizeof(*model));
	uint64_t samples[MAX_SAMPLES];
	size_t nsamples = 0;
	long long wrong_lookups = 0, wrong_updates = 0;
	char key[32], body[48], sql[128];

	if (!model)
		wl_finish(false, "nomem");
	wl_pin_self(0);
	/* A minimal initramfs may lack the directory (usually /tmp). */
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		mkdir(dir, 01777);
	}
	remove_files(path);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		db_fail("open");
	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s", wl_str("journal"));
	exec(sql);
	exec("CREATE TABLE kv(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v INTEGER NOT NULL, body TEXT NOT NULL)");
	exec("CREATE UNIQUE INDEX kv_k ON kv(k)");

	uint64_t start = wl_now_ns();
	sqlite3_stmt *ins = prepare("INSERT INTO kv(id, k, v, body) VALUES(?, ?, ?, ?)");
	for (long long id = 1; id <= rows; id++) {
		if ((id - 1) % batch == 0)
			exec("BEGIN");
		model[id] = (long long)(wl_mix64((uint64_t)id) % 1000000);
		key_of(id, key);
		body_of(id, body);
		sqlite3_bind_int64(ins, 1, id);
		sqlite3_bind_text(ins, 2, key, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(ins, 3, model[id]);
		sqlite3_bind_text(ins, 4, body, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(ins) != SQLITE_DONE)
			db_fail("insert");
		sqlite3_reset(ins);
		if (id % batch == 0 || id == rows)
			exec("COMMIT");
	}
	sqlite3_finalize(ins);

	sqlite3_stmt *get = prepare("SELECT id, v FROM kv WHERE k = ?");
	for (long long n = 0; n < lookups; n++) {
		long long id = 1 + (long long)wl_rand_below(&rng, (uint64_t)rows);
		uint64_t t0 = wl_now_ns();

		key_of(id, key);
		sqlite3_bind_text(get, 1, key, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(get) != SQLITE_ROW || sqlite3_column_int64(get, 0) != id ||
		    sqlite3_column_int64(get, 1) != model[id])
			wrong_lookups++;
		sqlite3_reset(get);
		if (n % (lookups / MAX_SAMPLES + 1) == 0 && nsamples < MAX_SAMPLES)
			samples[nsamples++] = wl_now_ns() - t0;
	}
	sqlite3_finalize(get);

	sqlite3_stmt *upd = prepare("UPDATE kv SET v = v + ? WHERE k = ?");
	for (long long n = 0; n < updates; n++) {
		long long id = 1 + (long long)wl_rand_below(&rng, (uint64_t)rows);
		long long delta = 1 + (long long)wl_rand_below(&rng, 1000);

		if (n % batch == 0)
			exec("BEGIN");
		key_of(id, key);
		sqlite3_bind_int64(upd, 1, delta);
		sqlite3_bind_text(upd, 2, key, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(upd) != SQLITE_DONE)
			db_fail("update");
		wrong_updates += sqlite3_changes(db) != 1;
		sqlite3_reset(upd);
		model[id] += delta;
		if ((n + 1) % batch == 0 || n + 1 == updates)
			exec("COMMIT");
	}
	sqlite3_finalize(upd);
	uint64_t elapsed = wl_now_ns() - start;

	/* The injected fault changes one row behind the model's back. */
	if (wl_inject()) {
		snprintf(sql, sizeof(sql), "UPDATE kv SET v = v + 1 WHERE id = %lld", rows / 2);
		exec(sql);
	}

	sqlite3_stmt *check = prepare("PRAGMA integrity_check");
	bool integrity = sqlite3_step(check) == SQLITE_ROW &&
			 strcmp((const char *)sqlite3_column_text(check, 0), "ok") == 0;
	sqlite3_finalize(check);

	uint64_t checksum = 0, expected = 0;
	long long scanned = 0;
	sqlite3_stmt *scan = prepare("SELECT id, k, v, body FROM kv ORDER BY id");
	while (sqlite3_step(scan) == SQLITE_ROW) {
		checksum += row_hash(sqlite3_column_int64(scan, 0), (const char *)sqlite3_column_text(scan, 1),
				     sqlite3_column_int64(scan, 2), (const char *)sqlite3_column_text(scan, 3));
		scanned++;
	}
	sqlite3_finalize(scan);
	for (long long id = 1; id <= rows; id++) {
		key_of(id, key);
		body_of(id, body);
		expected += row_hash(id, key, model[id], body);
	}

	sqlite3_stmt *size = prepare("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size");
	long long db_bytes = sqlite3_step(size) == SQLITE_ROW ? sqlite3_column_int64(size, 0) : -1;
	sqlite3_finalize(size);
	sqlite3_close(db);
	remove_files(path);

	wl_put_str("sqlite_version", sqlite3_libversion());
	wl_put_rate(rows + lookups + updates, elapsed);
	wl_put_latency("lookup_ns", samples, nsamples);
	wl_put_int("bytes", db_bytes);
	wl_put_int("rows_scanned", scanned);
	wl_put_int("wrong_lookups", wrong_lookups);
	wl_put_int("wrong_updates", wrong_updates);
	wl_put_int("integrity_ok", integrity);
	wl_put_int("checksum_ok", checksum == expected);
	bool ok = integrity && checksum == expected && scanned == rows && wrong_lookups == 0 && wrong_updates == 0;
	wl_finish(ok, ok ? NULL : (!integrity ? "integrity_check_failed" : "checksum_mismatch"));
}

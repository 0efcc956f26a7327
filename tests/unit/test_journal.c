/* Unit tests of the journal's record format (fs/journal.c): round trip,
 * a torn tail at every length, a flipped bit at every position, a file that
 * is not a journal, one daemon per identity, undo, and compaction. Works in
 * a fresh directory under the current one (meson runs tests in the build
 * directory) and removes it afterwards. */
#include "fs/journal.h"
#include "fs/state.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/unit/check.h"

static char cache[64];

static struct journal *open_id(const char *identity)
{
    char err[512] = "";
    struct journal *jn = NULL;
    if (journal_open(cache, identity, &jn, err, sizeof err) < 0)
        fprintf(stderr, "journal_open: %s\n", err);
    REQUIRE(jn != NULL);
    return jn;
}

static json_t *parse(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    REQUIRE(v != NULL);
    return v;
}

static void append(struct journal *jn, struct journal_record rec)
{
    journal_lock(jn);
    int rc = journal_append_locked(jn, &rec);
    journal_unlock(jn);
    REQUIRE(rc == 0);
}

static void append_set(struct journal *jn, const char *job, const char *key,
                       const char *value)
{
    json_t *v = parse(value);
    size_t len = 0;
    char *text = NULL;
    REQUIRE(state_value_compact(v, &text, &len) == 0);
    REQUIRE(text != NULL);
    json_decref(v);
    append(jn, (struct journal_record){.op = JOURNAL_SET, .job = job, .key = key,
                                       .value_text = text, .value_len = len});
    free(text);
}

/* What journal_each hands out, copied: one JSON object per record. */
static int collect(const struct journal_record *rec, void *arg)
{
    json_t *o = json_pack("{s:I, s:i, s:s}", "seq", (json_int_t)rec->seq, "op",
                          (int)rec->op, "job", rec->job);
    REQUIRE(o != NULL);
    if (rec->key)
        json_object_set_new(o, "key", json_string(rec->key));
    if (rec->to)
        json_object_set_new(o, "to", json_string(rec->to));
    if (rec->value)
        json_object_set(o, "value", rec->value);
    if (rec->text)
        json_object_set_new(o, "text", json_stringn(rec->text, rec->text_len));
    if (rec->bucket)
        json_object_set_new(o, "bucket", json_string(rec->bucket));
    json_array_append_new(arg, o);
    return 0;
}

static json_t *records(struct journal *jn, const char *job)
{
    json_t *a = json_array();
    REQUIRE(a != NULL);
    REQUIRE(journal_each(jn, job, collect, a) == 0);
    return a;
}

static off_t file_size(const char *path)
{
    struct stat st;
    REQUIRE(stat(path, &st) == 0);
    return st.st_size;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    REQUIRE(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    REQUIRE(n >= 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    REQUIRE(buf != NULL);
    REQUIRE(fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    REQUIRE(fwrite(buf, 1, len, f) == len);
    REQUIRE(fclose(f) == 0);
}

/* Offsets of the records in a journal file, walked by their lengths. */
static size_t record_offsets(const char *buf, size_t len, size_t *offs, size_t max)
{
    size_t n = 0, off = JOURNAL_HEADER_LEN;
    while (off + JOURNAL_RECORD_HEAD <= len && n < max) {
        const unsigned char *p = (const unsigned char *)buf + off;
        size_t l = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 |
                   (size_t)p[3] << 24;
        if (off + JOURNAL_RECORD_HEAD + l > len)
            break;
        offs[n++] = off;
        off += JOURNAL_RECORD_HEAD + l;
    }
    return n;
}

static void test_round_trip(void)
{
    struct journal *jn = open_id("round-trip");
    char *path = strdup(journal_path(jn));
    REQUIRE(path != NULL);
    append_set(jn, "j", "DatasetId", "{\"epoch_time\": 156234987, \"l\": [1, 2.5, null]}");
    append_set(jn, "j", "caf\xc3\xa9 \xe2\x98\x95", "\"nul \\u0000 inside\"");
    append(jn, (struct journal_record){.op = JOURNAL_REMOVE, .job = "j", .key = "gone"});
    append(jn, (struct journal_record){.op = JOURNAL_RENAME, .job = "j", .key = "a",
                                       .to = "b"});
    static const char text[] = "{\"x\": 1,\n \"y\": \"two\"}\n";
    append(jn, (struct journal_record){.op = JOURNAL_REPLACE, .job = "j", .text = text,
                                       .text_len = sizeof text - 1});
    append_set(jn, "other", "k", "true");
    json_t *before = records(jn, "j");
    journal_close(jn);

    struct stat st;
    REQUIRE(stat(path, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    char *dir = strdup(path);
    REQUIRE(dir != NULL);
    *strrchr(dir, '/') = '\0';
    REQUIRE(stat(dir, &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    char hex[65];
    journal_identity_hash("round-trip", hex);
    CHECK(strstr(dir, hex) != NULL);
    free(dir);

    jn = open_id("round-trip");
    json_t *after = records(jn, "j");
    CHECK(json_array_size(after) == 5);
    CHECK(json_equal(before, after));
    json_t *expect = parse(
        "[{\"op\": 0, \"job\": \"j\", \"key\": \"DatasetId\","
        "  \"value\": {\"epoch_time\": 156234987, \"l\": [1, 2.5, null]}},"
        " {\"op\": 0, \"job\": \"j\", \"key\": \"caf\\u00e9 \\u2615\","
        "  \"value\": \"nul \\u0000 inside\"},"
        " {\"op\": 1, \"job\": \"j\", \"key\": \"gone\"},"
        " {\"op\": 2, \"job\": \"j\", \"key\": \"a\", \"to\": \"b\"},"
        " {\"op\": 3, \"job\": \"j\", \"text\": \"{\\\"x\\\": 1,\\n \\\"y\\\": \\\"two\\\"}\\n\"}]");
    size_t i;
    json_t *rec;
    json_int_t last = 0;
    json_array_foreach(after, i, rec) {
        json_int_t seq = json_integer_value(json_object_get(rec, "seq"));
        CHECK(seq > last);
        last = seq;
        json_object_del(rec, "seq");
    }
    CHECK(json_equal(after, expect));
    CHECK(journal_count(jn, "other") == 1);
    CHECK(journal_count(jn, "nobody") == 0);
    /* Appends after a reopen continue the sequence. */
    append_set(jn, "j", "later", "1");
    json_t *more = records(jn, "j");
    CHECK(json_array_size(more) == 6);
    CHECK(json_integer_value(json_object_get(json_array_get(more, 5), "seq")) > last);
    json_decref(more);
    json_decref(expect);
    json_decref(before);
    json_decref(after);
    journal_close(jn);
    free(path);
}

/* A set record's value, given as compact text, reads back as the value it
 * is, whether appended as is or compacted from a parsed value first. */
static void test_value_as_text(void)
{
    struct journal *jn = open_id("value-as-text");
    static const char text[] = "{\"epoch_time\":156234987,\"l\":[1,\"}\",null]}";
    append(jn, (struct journal_record){.op = JOURNAL_SET, .job = "j", .key = "t",
                                       .value_text = text, .value_len = sizeof text - 1});
    append_set(jn, "j", "v", text);
    journal_close(jn);
    jn = open_id("value-as-text");
    json_t *got = records(jn, "j");
    REQUIRE(json_array_size(got) == 2);
    json_t *t = json_object_get(json_array_get(got, 0), "value");
    json_t *v = json_object_get(json_array_get(got, 1), "value");
    json_t *want = parse(text);
    CHECK(t != NULL && json_equal(t, want));
    CHECK(v != NULL && json_equal(v, want));
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(got, 0), "key")), "t") == 0);
    json_decref(want);
    json_decref(got);
    /* Names that need escaping survive; a name that is not UTF-8 is
     * refused with nothing written. */
    static const char job[] = "jo\"b \\ caf\xc3\xa9", key[] = "q\"\n\t\x01 \xe2\x98\x95";
    append(jn, (struct journal_record){.op = JOURNAL_SET, .job = job, .key = key,
                                       .value_text = "[1]", .value_len = 3});
    off_t size = file_size(journal_path(jn));
    journal_lock(jn);
    struct journal_record bad = {.op = JOURNAL_SET, .job = job, .key = "bad\xff",
                                 .value_text = "1", .value_len = 1};
    CHECK(journal_append_locked(jn, &bad) == -EINVAL);
    journal_unlock(jn);
    CHECK(file_size(journal_path(jn)) == size);
    journal_close(jn);
    jn = open_id("value-as-text");
    got = records(jn, job);
    REQUIRE(json_array_size(got) == 1);
    json_t *rec = json_array_get(got, 0);
    CHECK(strcmp(json_string_value(json_object_get(rec, "key")), key) == 0);
    CHECK(strcmp(json_string_value(json_object_get(rec, "job")), job) == 0);
    want = parse("[1]");
    CHECK(json_equal(json_object_get(rec, "value"), want));
    json_decref(want);
    json_decref(got);
    journal_close(jn);
}

static void test_identities_and_lock(void)
{
    struct journal *a = open_id("identity-a");
    append_set(a, "j", "k", "1");
    struct journal *b = open_id("identity-b");
    CHECK(journal_count(b, "j") == 0);
    CHECK(strcmp(journal_path(a), journal_path(b)) != 0);
    char err[512] = "";
    struct journal *again = NULL;
    CHECK(journal_open(cache, "identity-a", &again, err, sizeof err) == -EBUSY);
    CHECK(again == NULL);
    CHECK(strstr(err, "in use by another bookmarkfs mount") != NULL);
    journal_close(again);
    journal_close(b);
    journal_close(a);
    a = open_id("identity-a"); /* the lock went with the first */
    CHECK(journal_count(a, "j") == 1);
    journal_close(a);
}

/* Three records; then `damage` changes the file; the first two survive,
 * the file is cut back to them, and appending works again. */
static void check_damage(const char *identity, void (*damage)(char *buf, size_t *len,
                                                             size_t last, size_t pos),
                         size_t pos)
{
    struct journal *jn = open_id(identity);
    char *path = strdup(journal_path(jn));
    REQUIRE(path != NULL);
    journal_close(jn);
    size_t len;
    char *orig = read_all(path, &len);
    size_t offs[8];
    REQUIRE(record_offsets(orig, len, offs, 8) == 3);
    char *buf = malloc(len);
    REQUIRE(buf != NULL);
    memcpy(buf, orig, len);
    size_t dlen = len;
    damage(buf, &dlen, offs[2], pos);
    write_all(path, buf, dlen);
    jn = open_id(identity);
    json_t *recs = records(jn, "j");
    if (json_array_size(recs) != 2)
        fprintf(stderr, "damage at %zu: %zu records survive\n", pos,
                json_array_size(recs));
    CHECK(json_array_size(recs) == 2);
    json_decref(recs);
    CHECK(file_size(path) == (off_t)offs[2]);
    append_set(jn, "j", "third", "3");
    journal_close(jn);
    jn = open_id(identity);
    CHECK(journal_count(jn, "j") == 3);
    journal_close(jn);
    write_all(path, orig, len); /* as it was, for the next round */
    free(buf);
    free(orig);
    free(path);
}

static void truncate_at(char *buf, size_t *len, size_t last, size_t pos)
{
    (void)buf;
    *len = last + pos;
}

static void flip_bit(char *buf, size_t *len, size_t last, size_t pos)
{
    (void)len;
    buf[last + pos / 8] ^= (char)(1u << (pos % 8));
}

static void test_torn_and_flipped_tail(void)
{
    struct journal *jn = open_id("damage");
    append_set(jn, "j", "first", "{\"a\": 1}");
    append_set(jn, "j", "second", "[2]");
    append_set(jn, "j", "third", "\"three\"");
    char *path = strdup(journal_path(jn));
    REQUIRE(path != NULL);
    journal_close(jn);
    size_t len;
    char *buf = read_all(path, &len);
    size_t offs[8];
    REQUIRE(record_offsets(buf, len, offs, 8) == 3);
    size_t last_size = len - offs[2];
    free(buf);
    free(path);
    /* Every length the last record can be torn at (power lost mid-append). */
    for (size_t cut = 1; cut < last_size; cut++)
        check_damage("damage", truncate_at, cut);
    /* A flipped bit in every byte of the last record (a different bit of
     * each byte, so every bit position is covered). */
    for (size_t byte = 0; byte < last_size; byte++)
        check_damage("damage", flip_bit, byte * 8 + byte % 8);
}

/* Files named journal.unreadable-* in dir. */
static int count_aside(const char *dir)
{
    DIR *d = opendir(dir);
    REQUIRE(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, "journal.unreadable-", 19) == 0;
    closedir(d);
    return n;
}

static void test_not_a_journal(void)
{
    struct journal *jn = open_id("garbage");
    append_set(jn, "j", "k", "1");
    char *path = strdup(journal_path(jn));
    REQUIRE(path != NULL);
    journal_close(jn);
    write_all(path, "this is not a journal at all\n", 29);
    jn = open_id("garbage");
    CHECK(journal_count(jn, "j") == 0);
    CHECK(file_size(path) == JOURNAL_HEADER_LEN);
    append_set(jn, "j", "k", "2");
    journal_close(jn);
    jn = open_id("garbage");
    CHECK(journal_count(jn, "j") == 1);
    journal_close(jn);
    /* The unreadable file was set aside for a human, not deleted. */
    char *dir = strdup(path);
    REQUIRE(dir != NULL);
    *strrchr(dir, '/') = '\0';
    CHECK(count_aside(dir) == 1);
    free(dir);
    free(path);
}

static void test_undo(void)
{
    struct journal *jn = open_id("undo");
    append_set(jn, "j", "kept", "1");
    off_t size = file_size(journal_path(jn));
    struct journal_record rec = {.op = JOURNAL_SET, .job = "j", .key = "undone",
                                 .value_text = "2", .value_len = 1};
    journal_lock(jn);
    REQUIRE(journal_append_locked(jn, &rec) == 0);
    CHECK(journal_undo_locked(jn) == 0);
    CHECK(journal_undo_locked(jn) == -EINVAL); /* only the last one, once */
    journal_unlock(jn);
    CHECK(file_size(journal_path(jn)) == size);
    CHECK(journal_count(jn, "j") == 1);
    /* Not representable: a key that is not UTF-8 leaves nothing behind. */
    rec = (struct journal_record){.op = JOURNAL_SET, .job = "j", .key = "bad\xff",
                                  .value_text = "3", .value_len = 1};
    journal_lock(jn);
    CHECK(journal_append_locked(jn, &rec) == -EINVAL);
    journal_unlock(jn);
    CHECK(file_size(journal_path(jn)) == size);
    journal_close(jn);
}

/* The deepest value the state accepts sits one level deeper in a record
 * ({"value": V}); it must still read back after a reopen. */
static void test_deepest_value(void)
{
    size_t depth = STATE_VALUE_DEPTH_MAX;
    char *text = malloc(2 * depth + 1);
    REQUIRE(text != NULL);
    memset(text, '[', depth);
    memset(text + depth, ']', depth);
    text[2 * depth] = '\0';
    struct journal *jn = open_id("deep");
    append_set(jn, "j", "deep", text);
    journal_close(jn);
    jn = open_id("deep");
    json_t *recs = records(jn, "j");
    CHECK(json_array_size(recs) == 1);
    json_t *v = json_object_get(json_array_get(recs, 0), "value");
    size_t len = 0;
    char *back = NULL;
    CHECK(v && state_dump_value(v, &back, &len) == 0);
    CHECK(back && len == 2 * depth + 1 && memcmp(back, text, 2 * depth) == 0);
    free(back);
    json_decref(recs);
    journal_close(jn);
    free(text);
}

static int collect_jobs(const char *job, size_t n, void *arg)
{
    json_object_set_new(arg, job, json_integer((json_int_t)n));
    return 0;
}

static void test_compaction(void)
{
    struct journal *jn = open_id("compact");
    append_set(jn, "a", "k1", "1");
    append_set(jn, "b", "k1", "1");
    append_set(jn, "a", "k2", "2");
    journal_lock(jn);
    uint64_t snapshot = journal_last_seq_locked(jn); /* a's upload sees k1, k2 */
    journal_unlock(jn);
    append_set(jn, "a", "k3", "3"); /* after the snapshot: must stay */
    append_set(jn, "b", "k2", "2");
    off_t before = file_size(journal_path(jn));
    json_t *b_before = records(jn, "b");

    CHECK(journal_compact(jn, "a", snapshot) == 0);
    CHECK(file_size(journal_path(jn)) < before);
    json_t *a_left = records(jn, "a");
    CHECK(json_array_size(a_left) == 1);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(a_left, 0), "key")),
                 "k3") == 0);
    json_t *b_after = records(jn, "b");
    CHECK(json_equal(b_before, b_after));
    json_t *jobs = json_object();
    REQUIRE(jobs != NULL);
    CHECK(journal_jobs(jn, collect_jobs, jobs) == 0);
    json_t *expect = parse("{\"a\": 1, \"b\": 2}");
    CHECK(json_equal(jobs, expect));
    json_decref(expect);
    json_decref(jobs);
    /* Appends go on after a compaction, and all of it reads back. */
    append_set(jn, "a", "k4", "4");
    journal_close(jn);
    jn = open_id("compact");
    CHECK(journal_count(jn, "a") == 2);
    json_t *b_reopened = records(jn, "b");
    CHECK(json_equal(b_before, b_reopened));
    /* Everything uploaded: only the header is left. */
    journal_lock(jn);
    uint64_t all = journal_last_seq_locked(jn);
    journal_unlock(jn);
    CHECK(journal_compact(jn, "a", all) == 0);
    CHECK(journal_compact(jn, "b", all) == 0);
    CHECK(file_size(journal_path(jn)) == JOURNAL_HEADER_LEN);
    CHECK(journal_count(jn, "a") + journal_count(jn, "b") == 0);
    journal_close(jn);
    json_decref(a_left);
    json_decref(b_before);
    json_decref(b_after);
    json_decref(b_reopened);
}

static void append_base(struct journal *jn, const char *job, const char *bucket,
                        const char *key)
{
    append(jn, (struct journal_record){.op = JOURNAL_BASE, .job = job, .bucket = bucket,
                                       .key = key, .text = bucket ? NULL : "{}",
                                       .text_len = bucket ? 0 : 2});
}

static uint64_t last_seq(struct journal *jn)
{
    journal_lock(jn);
    uint64_t seq = journal_last_seq_locked(jn);
    journal_unlock(jn);
    return seq;
}

/* An upload's compaction: the job's dropped records give way to a base
 * naming the uploaded object, in the first one's place and with its seq,
 * when records of the job stay (or when asked); bases are not changes. */
static void test_compaction_to_a_base(void)
{
    struct journal *jn = open_id("base");
    append_base(jn, "a", NULL, NULL); /* seq 1 */
    append_set(jn, "a", "k1", "1");
    append_base(jn, "b", "lz", "old-b");
    append_set(jn, "b", "k1", "1");
    append_set(jn, "a", "k2", "2");
    uint64_t upto = last_seq(jn);
    append_set(jn, "a", "k3", "3"); /* in flight: stays, on the new base */
    struct journal_record base = {.op = JOURNAL_BASE, .job = "a", .bucket = "lz",
                                  .key = "uploaded-a"};
    uint64_t base_seq = 0;
    CHECK(journal_compact_base(jn, "a", upto, &base, 0, &base_seq) == 0);
    CHECK(base_seq == 1);
    json_t *want = parse("[{\"seq\": 1, \"op\": 4, \"job\": \"a\", \"bucket\": \"lz\","
                         " \"key\": \"uploaded-a\"},"
                         " {\"seq\": 6, \"op\": 0, \"job\": \"a\", \"key\": \"k3\","
                         " \"value\": 3}]");
    json_t *got = records(jn, "a");
    CHECK(json_equal(got, want));
    json_decref(got);
    json_t *jobs = json_object();
    REQUIRE(jobs != NULL);
    CHECK(journal_jobs(jn, collect_jobs, jobs) == 0);
    json_t *counts = parse("{\"a\": 1, \"b\": 1}"); /* changes, not bases */
    CHECK(json_equal(jobs, counts));
    json_decref(counts);
    json_decref(jobs);
    CHECK(journal_changes(jn, "a") == 1 && journal_count(jn, "a") == 2);
    /* b, nothing in flight: kept as a base only when asked */
    base.job = "b";
    base.key = "uploaded-b";
    CHECK(journal_compact_base(jn, "b", last_seq(jn), &base, 1, &base_seq) == 0);
    CHECK(base_seq == 3);
    CHECK(journal_count(jn, "b") == 1 && journal_changes(jn, "b") == 0);
    journal_close(jn);
    jn = open_id("base"); /* the file reads back whole, seqs in order */
    got = records(jn, "a");
    CHECK(json_equal(got, want));
    json_decref(got);
    got = records(jn, "b");
    CHECK(json_array_size(got) == 1 &&
          strcmp(json_string_value(json_object_get(json_array_get(got, 0), "key")),
                 "uploaded-b") == 0);
    json_decref(got);
    json_decref(want);
    journal_close(jn);
}

/* The dropped records are the file's tail: cut off in place (the same
 * file, no copy), the records before them kept. */
static void test_compaction_cuts_a_tail_in_place(void)
{
    struct journal *jn = open_id("tail");
    append_base(jn, "other", NULL, NULL);
    append_set(jn, "other", "k", "1");
    off_t kept = file_size(journal_path(jn));
    struct stat st0;
    REQUIRE(stat(journal_path(jn), &st0) == 0);
    append_base(jn, "full", NULL, NULL);
    for (int i = 0; i < 20; i++)
        append_set(jn, "full", "k", "[1, 2, 3]");
    uint64_t base_seq = 9;
    CHECK(journal_compact_base(jn, "full", last_seq(jn), NULL, 0, &base_seq) == 0);
    CHECK(base_seq == 0);
    struct stat st1;
    REQUIRE(stat(journal_path(jn), &st1) == 0);
    CHECK(st1.st_ino == st0.st_ino && st1.st_size == kept);
    CHECK(journal_count(jn, "full") == 0 && journal_count(jn, "other") == 2);
    append_set(jn, "other", "k2", "2"); /* appends go on at the cut */
    journal_close(jn);
    jn = open_id("tail");
    CHECK(journal_count(jn, "other") == 3 && journal_count(jn, "full") == 0);
    journal_close(jn);
}

/* No room for a compaction's copy (here a file-size limit below what the
 * copy of b's records needs): a's records, ahead of b's, become a pad in
 * place, which reading skips; b's stay whole. */
static void test_compaction_without_room_pads(void)
{
    struct journal *jn = open_id("pads");
    append_base(jn, "a", NULL, NULL);
    append_set(jn, "a", "k", "1");
    append_base(jn, "b", NULL, NULL);
    char value[600];
    memset(value, 'v', sizeof value);
    value[0] = value[sizeof value - 2] = '"';
    value[sizeof value - 1] = '\0';
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        append_set(jn, "b", key, value);
    }
    json_t *b_before = records(jn, "b");
    off_t size = file_size(journal_path(jn));
    struct rlimit old;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    REQUIRE(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
    struct rlimit small = {.rlim_cur = 4096, .rlim_max = old.rlim_max};
    REQUIRE(size > 8192 && setrlimit(RLIMIT_FSIZE, &small) == 0);
    uint64_t base_seq = 7;
    CHECK(journal_compact_base(jn, "a", last_seq(jn), NULL, 0, &base_seq) == 0);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    CHECK(base_seq == 0);
    CHECK(file_size(journal_path(jn)) == size); /* in place */
    CHECK(journal_count(jn, "a") == 0);
    size_t len = 0;
    char *data = read_all(journal_path(jn), &len);
    CHECK(memmem(data, len, "bfs-pad!", 8) != NULL);
    free(data);
    append_set(jn, "a", "after", "2");
    journal_close(jn);
    jn = open_id("pads"); /* reading skips the pad */
    json_t *b_after = records(jn, "b");
    CHECK(json_equal(b_before, b_after));
    CHECK(journal_count(jn, "a") == 1);
    /* with room, the next compaction that copies goes without the pad */
    CHECK(journal_compact(jn, "b", last_seq(jn)) == 0);
    data = read_all(journal_path(jn), &len);
    CHECK(memmem(data, len, "bfs-pad!", 8) == NULL);
    free(data);
    CHECK(journal_count(jn, "a") == 1 && journal_count(jn, "b") == 0);
    json_decref(b_before);
    json_decref(b_after);
    journal_close(jn);
}

/* Compactions of one job while another thread appends to another: every
 * appended record survives, in order. */
#define APPENDS 1000
static void *append_many(void *arg)
{
    struct journal *jn = arg;
    for (int i = 0; i < APPENDS; i++) {
        char key[32], value[32];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(value, sizeof value, "%d", i);
        append_set(jn, "writer", key, value);
    }
    return NULL;
}

static int check_order(const struct journal_record *rec, void *arg)
{
    int *next = arg;
    char key[32];
    snprintf(key, sizeof key, "k%d", *next);
    CHECK(rec->op == JOURNAL_SET && strcmp(rec->key, key) == 0 &&
          json_integer_value(rec->value) == *next);
    (*next)++;
    return 0;
}

static void test_compaction_during_appends(void)
{
    struct journal *jn = open_id("busy");
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, append_many, jn) == 0);
    for (int i = 0; i < 100; i++) {
        append_set(jn, "uploaded", "k", "1");
        journal_lock(jn);
        uint64_t upto = journal_last_seq_locked(jn);
        journal_unlock(jn);
        CHECK(journal_compact(jn, "uploaded", upto) == 0);
    }
    REQUIRE(pthread_join(t, NULL) == 0);
    CHECK(journal_count(jn, "uploaded") == 0);
    journal_close(jn);
    jn = open_id("busy");
    int next = 0;
    CHECK(journal_each(jn, "writer", check_order, &next) == 0);
    CHECK(next == APPENDS);
    CHECK(journal_count(jn, "uploaded") == 0);
    journal_close(jn);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(cache, sizeof cache, "journal-test-XXXXXX");
    REQUIRE(mkdtemp(cache) != NULL);
    /* the journal creates missing components of its cache dir */
    strncat(cache, "/cache", sizeof cache - strlen(cache) - 1);
    test_round_trip();
    test_value_as_text();
    test_identities_and_lock();
    test_torn_and_flipped_tail();
    test_not_a_journal();
    test_undo();
    test_compaction();
    test_compaction_to_a_base();
    test_compaction_cuts_a_tail_in_place();
    test_compaction_without_room_pads();
    test_compaction_during_appends();
    test_deepest_value();
    *strrchr(cache, '/') = '\0';
    nftw(cache, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    if (failures)
        fprintf(stderr, "%d failures\n", failures);
    return failures ? 1 : 0;
}

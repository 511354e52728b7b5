/* clustercerts.c - a certificate set from one legion member to another
 * (clustercerts.h). */
#include "clustercerts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "../common/beneath.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "clustercrypt.h"

enum { F_KEY, F_CRT, F_CA, F_N };
/* The PEMs' order in the payload. */
static const int pem_order[F_N] = {F_CRT, F_CA, F_KEY};

#define MAGIC_LEN (sizeof CLUSTERCERTS_MAGIC - 1)

/* "/containers/<uid>/": what every path of uid's set starts with. */
static size_t home_of(uid_t uid, char home[64])
{
    return (size_t)snprintf(home, 64, "/containers/%u/", (unsigned)uid);
}

static const char *path_of(const subscription_t *s, int i)
{
    return i == F_KEY ? s->tls.key : i == F_CRT ? s->tls.crt : s->tls.ca[0] ? s->tls.ca : NULL;
}

static void put32(unsigned char *p, size_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static size_t get32(const unsigned char *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

static void digest_of(const unsigned char *const pem[F_N], const size_t len[F_N],
                      unsigned char out[CLUSTERCERTS_DIGEST])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    for (int i = 0; i < F_N; i++) {
        unsigned char n[4];
        put32(n, len[i]);
        crypto_hash_sha256_update(&st, n, sizeof n);
        if (len[i])
            crypto_hash_sha256_update(&st, pem[i], len[i]);
    }
    crypto_hash_sha256_final(&st, out);
}

/* ---- the sender: pack ------------------------------------------------------------ */

/* Open the router's copies of the set's files (fd[i] -1 for no CA) and
 * their sizes. */
static int copies_open(const char *router_homes, uid_t uid, const subscription_t *s, int fd[F_N],
                       size_t size[F_N], char *why, size_t why_len)
{
    char home[64];
    size_t hl = home_of(uid, home);
    int top = open(router_homes, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (top < 0)
        return str_why(why, why_len, "the node cannot open the router's copies: %s",
                       strerror(errno));
    int rc = 0;
    for (int i = 0; i < F_N && rc == 0; i++) {
        const char *p = path_of(s, i);
        struct stat sb;
        if (!p)
            continue;
        if (strncmp(p, home, hl) != 0 || !p[hl])
            rc = str_why(why, why_len, "%s is not a file of container %u", p, (unsigned)uid);
        else if ((fd[i] = beneath_open(top, p + strlen("/containers/"), /* <uid>/<rel> */
                                       O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0, 0)) < 0)
            rc = str_why(why, why_len, "the router's copy of %s: %s (not checked yet?)", p,
                         strerror(errno));
        else if (fstat(fd[i], &sb) < 0 || !S_ISREG(sb.st_mode))
            rc = str_why(why, why_len, "the router's copy of %s is not a regular file", p);
        else
            size[i] = (size_t)sb.st_size;
    }
    close(top);
    return rc;
}

/* Read exactly `size` bytes of fd into dst. */
static int read_all(int fd, unsigned char *dst, size_t size, const char *path, char *why,
                    size_t why_len)
{
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(fd, dst + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return str_why(why, why_len, "the router's copy of %s cannot be read: %s", path,
                           n < 0 ? strerror(errno) : "it shrank");
        got += (size_t)n;
    }
    return 0;
}

/* The payload's fixed part: magic, uid, name and paths.  Its length. */
static size_t head_write(unsigned char *out, uid_t uid, const subscription_t *s)
{
    size_t at = MAGIC_LEN;
    memcpy(out, CLUSTERCERTS_MAGIC, MAGIC_LEN);
    put32(out + at, uid);
    at += 4;
    const char *text[1 + F_N] = {s->key, path_of(s, F_KEY), path_of(s, F_CRT), path_of(s, F_CA)};
    for (int i = 0; i < 1 + F_N; i++) {
        size_t n = text[i] ? strlen(text[i]) : 0;
        out[at++] = (unsigned char)n;
        memcpy(out + at, text[i] ? text[i] : "", n);
        at += n;
    }
    return at;
}

/* Lay out and read the PEMs after the head; the payload's length. */
static ssize_t pems_read(const subscription_t *s, const int fd[F_N], const size_t size[F_N],
                         unsigned char *out, size_t at, unsigned char digest[CLUSTERCERTS_DIGEST],
                         char *why, size_t why_len)
{
    const unsigned char *pem[F_N] = {0};
    for (int k = 0; k < F_N; k++) {
        int i = pem_order[k];
        put32(out + at, size[i]);
        at += 4;
        pem[i] = out + at;
        if (fd[i] >= 0 && read_all(fd[i], out + at, size[i], path_of(s, i), why, why_len) < 0)
            return -1;
        at += size[i];
    }
    digest_of(pem, size, digest);
    return (ssize_t)at;
}

ssize_t clustercerts_pack(const char *router_homes, uid_t uid, const subscription_t *s,
                          unsigned char *out, size_t cap, unsigned char digest[CLUSTERCERTS_DIGEST],
                          char *why, size_t why_len)
{
    if (!s->tls.any || s->tls.acme)
        return str_why(why, why_len, "%s names no certificate files of its home", s->key);
    int fd[F_N] = {-1, -1, -1};
    size_t size[F_N] = {0};
    ssize_t rc = copies_open(router_homes, uid, s, fd, size, why, why_len);
    size_t total = MAGIC_LEN + 4 + 1 + strlen(s->key) + 4 * F_N;
    for (int i = 0; i < F_N; i++)
        total += 1 + (path_of(s, i) ? strlen(path_of(s, i)) : 0) + size[i];
    if (rc == 0 && total > CLUSTER_MAX_PAYLOAD)
        rc = str_why(why, why_len,
                     "the certificate chain of %s is too large to travel in the cluster (%zu > "
                     "%d bytes)",
                     s->key, total, CLUSTER_MAX_PAYLOAD);
    else if (rc == 0 && total > cap)
        rc = str_why(why, why_len, "the node's buffer (%zu bytes) cannot hold the set of %s", cap,
                     s->key);
    if (rc == 0)
        rc = pems_read(s, fd, size, out, head_write(out, uid, s), digest, why, why_len);
    for (int i = 0; i < F_N; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    if (rc < 0 && total <= cap)
        sodium_memzero(out, total); /* part of a key may be there */
    return rc;
}

int clustercerts_digest(const char *router_homes, uid_t uid, const subscription_t *s,
                        unsigned char digest[CLUSTERCERTS_DIGEST], char *why, size_t why_len)
{
    unsigned char *buf = malloc(CLUSTER_MAX_PAYLOAD);
    if (!buf)
        return str_why(why, why_len, "the node is out of memory");
    ssize_t n = clustercerts_pack(router_homes, uid, s, buf, CLUSTER_MAX_PAYLOAD, digest, why,
                                  why_len);
    if (n > 0)
        sodium_memzero(buf, (size_t)n);
    free(buf);
    return n < 0 ? -1 : 0;
}

/* ---- the small payloads --------------------------------------------------------- */

int clustercerts_sub_split(const unsigned char *payload, size_t len, size_t *pkt_len,
                           const unsigned char **digest, err_t *e)
{
    if (len < 4)
        return err_set(e, ERR_INPUT, "a forwarded subscription of %zu bytes is no packet", len);
    size_t pl = 4 + (size_t)(payload[1] | payload[2] << 8);
    if (len != pl && len != pl + CLUSTERCERTS_DIGEST)
        return err_set(e, ERR_INPUT,
                       "a forwarded subscription of %zu bytes holds a %zu-byte packet and "
                       "neither nothing nor a digest after it",
                       len, pl);
    *pkt_len = pl;
    *digest = len == pl ? NULL : payload + pl;
    return 0;
}

ssize_t clustercerts_need(uid_t uid, const char *key_path,
                          const unsigned char digest[CLUSTERCERTS_DIGEST], unsigned char *out,
                          size_t cap, err_t *e)
{
    char hex[2 * CLUSTERCERTS_DIGEST + 1];
    sodium_bin2hex(hex, sizeof hex, digest, CLUSTERCERTS_DIGEST);
    int n = snprintf((char *)out, cap, "%u%c%s%c%s", (unsigned)uid, 0, key_path, 0, hex);
    if (n < 0 || (size_t)n >= cap)
        return err_set(e, ERR_INTERNAL, "a NEED does not fit in %zu bytes", cap);
    return n;
}

int clustercerts_need_parse(const unsigned char *payload, size_t len, uid_t *uid,
                            char key_path[256], unsigned char digest[CLUSTERCERTS_DIGEST],
                            err_t *e)
{
    const char *p = (const char *)payload, *end = p + len;
    const char *z1 = memchr(p, '\0', len);
    const char *z2 = z1 ? memchr(z1 + 1, '\0', (size_t)(end - z1 - 1)) : NULL;
    size_t ul = z1 ? (size_t)(z1 - p) : 0, kl = z2 ? (size_t)(z2 - z1 - 1) : 0;
    size_t hl = z2 ? (size_t)(end - z2 - 1) : 0;
    char num[16];
    if (!z2 || ul == 0 || ul >= sizeof num || strspn(p, "0123456789") != ul || kl == 0 ||
        kl > 255 || hl != 2 * CLUSTERCERTS_DIGEST)
        return err_set(e, ERR_INPUT, "a malformed NEED (%zu bytes)", len);
    memcpy(num, p, ul);
    num[ul] = '\0';
    unsigned long u = strtoul(num, NULL, 10);
    size_t bin = 0;
    if (u <= UID_BASE || u > 0x7fffffffUL ||
        sodium_hex2bin(digest, CLUSTERCERTS_DIGEST, z2 + 1, hl, NULL, &bin, NULL) != 0 ||
        bin != CLUSTERCERTS_DIGEST)
        return err_set(e, ERR_INPUT, "a malformed NEED (uid %s)", num);
    *uid = (uid_t)u;
    memcpy(key_path, z1 + 1, kl);
    key_path[kl] = '\0';
    return 0;
}

/* ---- the receiver: the sets held ------------------------------------------------- */

struct set {
    char sender[256];
    uid_t uid;
    char name[256];
    char path[F_N][256]; /* "" for no CA */
    unsigned char digest[CLUSTERCERTS_DIGEST]; /* the sender's: of what it sent */
    unsigned char copies[CLUSTERCERTS_DIGEST]; /* of the copies as installed */
    long long seen_ms;
};

/* A NEED this node sent (clustercerts_ask), or a set it refused. */
struct ask {
    char sender[256];
    uid_t uid;
    char key_path[256];
    unsigned char digest[CLUSTERCERTS_DIGEST];
    long long until_ms; /* 0: a free slot */
};

struct clustercerts {
    subcerts_t *certs;
    size_t max_sets;
    long long forget_ms;
    struct set *s;
    size_t n, cap;
    struct ask asked[CLUSTERCERTS_ASKED];
    struct ask refused[CLUSTERCERTS_REFUSED];
};

clustercerts_t *clustercerts_new(const clustercerts_opts_t *o, err_t *e)
{
    clustercerts_t *cc = calloc(1, sizeof *cc);
    if (!cc) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    cc->certs = o->certs;
    cc->max_sets = o->max_sets;
    cc->forget_ms = o->forget_ms;
    return cc;
}

void clustercerts_free(clustercerts_t *cc)
{
    if (cc)
        free(cc->s);
    free(cc);
}

static struct set *set_find(clustercerts_t *cc, uid_t uid, const char *name,
                            const char *const path[F_N])
{
    for (size_t i = 0; i < cc->n; i++) {
        struct set *st = &cc->s[i];
        if (st->uid == uid && !strcmp(st->name, name) && !strcmp(st->path[F_KEY], path[F_KEY]) &&
            !strcmp(st->path[F_CRT], path[F_CRT]) &&
            !strcmp(st->path[F_CA], path[F_CA] ? path[F_CA] : ""))
            return st;
    }
    return NULL;
}

/* The copies of st still hold what was installed: a local container of
 * the same uid naming the same paths (uids are global: one customer runs
 * the cluster domain on several members) may have written them since. */
static bool copies_intact(clustercerts_t *cc, const struct set *st, const subscription_t *s)
{
    unsigned char now[CLUSTERCERTS_DIGEST];
    char why[512];
    return clustercerts_digest(subcerts_router_homes(cc->certs), st->uid, s, now, why,
                               sizeof why) == 0 &&
           sodium_memcmp(now, st->copies, CLUSTERCERTS_DIGEST) == 0;
}

bool clustercerts_held(clustercerts_t *cc, uid_t uid, const subscription_t *s,
                       const unsigned char digest[CLUSTERCERTS_DIGEST], long long now_ms)
{
    const char *path[F_N] = {path_of(s, F_KEY), path_of(s, F_CRT), path_of(s, F_CA)};
    struct set *st = set_find(cc, uid, s->key, path);
    if (!st || sodium_memcmp(st->digest, digest, CLUSTERCERTS_DIGEST) != 0 ||
        !copies_intact(cc, st, s))
        return false;
    st->seen_ms = now_ms;
    return true;
}

/* ---- NEEDs sent and sets refused ------------------------------------------------ */

static bool ask_is(const struct ask *a, const char *sender, uid_t uid, const char *key_path,
                   const unsigned char digest[CLUSTERCERTS_DIGEST], long long now_ms)
{
    return a->until_ms > now_ms && !strcmp(a->sender, sender) &&
           (!key_path || (a->uid == uid && !strcmp(a->key_path, key_path))) &&
           !sodium_memcmp(a->digest, digest, CLUSTERCERTS_DIGEST);
}

/* Record in a table of n: a free or expired slot, else the one nearest
 * its end (the bound holds; the oldest is forgotten). */
static void ask_put(struct ask *t, size_t n, const char *sender, uid_t uid, const char *key_path,
                    const unsigned char digest[CLUSTERCERTS_DIGEST], long long until_ms)
{
    struct ask *slot = &t[0];
    for (size_t i = 0; i < n; i++)
        if (t[i].until_ms < slot->until_ms)
            slot = &t[i];
    *slot = (struct ask){.uid = uid, .until_ms = until_ms};
    snprintf(slot->sender, sizeof slot->sender, "%s", sender);
    snprintf(slot->key_path, sizeof slot->key_path, "%s", key_path ? key_path : "");
    memcpy(slot->digest, digest, CLUSTERCERTS_DIGEST);
}

bool clustercerts_ask(clustercerts_t *cc, const char *sender, uid_t uid, const char *key_path,
                      const unsigned char digest[CLUSTERCERTS_DIGEST], long long now_ms)
{
    for (size_t i = 0; i < CLUSTERCERTS_REFUSED; i++)
        if (ask_is(&cc->refused[i], sender, uid, NULL, digest, now_ms))
            return false;
    for (size_t i = 0; i < CLUSTERCERTS_ASKED; i++)
        if (ask_is(&cc->asked[i], sender, uid, key_path, digest, now_ms)) {
            cc->asked[i].until_ms = now_ms + CLUSTERCERTS_ASK_MS;
            return true;
        }
    ask_put(cc->asked, CLUSTERCERTS_ASKED, sender, uid, key_path, digest,
            now_ms + CLUSTERCERTS_ASK_MS);
    return true;
}

/* The NEED a CERT answers; NULL: none. */
static struct ask *ask_take(clustercerts_t *cc, const char *sender, uid_t uid,
                            const char *key_path, const unsigned char digest[CLUSTERCERTS_DIGEST],
                            long long now_ms)
{
    for (size_t i = 0; i < CLUSTERCERTS_ASKED; i++)
        if (ask_is(&cc->asked[i], sender, uid, key_path, digest, now_ms))
            return &cc->asked[i];
    return NULL;
}

/* A path of uid's home as a packet names it: /containers/<uid>/<rel>,
 * <rel> of 1..SUBSCRIPTION_PATH_DEPTH names (no "", ".", ".."), not under
 * run/ (the container's sockets). */
static bool home_path_ok(uid_t uid, const char *path)
{
    char home[64];
    size_t hl = home_of(uid, home);
    const char *rel = path + hl;
    if (strncmp(path, home, hl) != 0 || !*rel || !strncmp(rel, "run/", 4) || !strcmp(rel, "run"))
        return false;
    int depth = 0;
    for (const char *c = rel; *c; depth++) {
        size_t n = strcspn(c, "/");
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && !strncmp(c, "..", 2)) ||
            (c[n] == '/' && !c[n + 1]))
            return false;
        c += n + (c[n] == '/');
    }
    return depth <= SUBSCRIPTION_PATH_DEPTH;
}

/* One text of the payload's head: 1 length byte, then bytes (no NUL). */
static bool text_take(const unsigned char *p, size_t len, size_t *at, char dst[256], bool may_empty)
{
    if (*at >= len)
        return false;
    size_t n = p[(*at)++];
    if ((!n && !may_empty) || n > len - *at || memchr(p + *at, '\0', n))
        return false;
    memcpy(dst, p + *at, n);
    dst[n] = '\0';
    *at += n;
    return true;
}

/* What a CERT payload says (pem[]: pointers into it). */
struct parsed {
    uid_t uid;
    char name[256], path[F_N][256];
    char *pem[F_N];
    size_t len[F_N];
};

static int payload_parse(unsigned char *p, size_t len, struct parsed *o, char *why, size_t why_len)
{
    size_t at = MAGIC_LEN + 4;
    if (len < at || memcmp(p, CLUSTERCERTS_MAGIC, MAGIC_LEN))
        return str_why(why, why_len, "not a certificate set (%zu bytes)", len);
    size_t u = get32(p + MAGIC_LEN);
    o->uid = (uid_t)u;
    if (u <= UID_BASE || u > 0x7fffffffUL || !text_take(p, len, &at, o->name, false) ||
        !text_take(p, len, &at, o->path[F_KEY], false) ||
        !text_take(p, len, &at, o->path[F_CRT], false) ||
        !text_take(p, len, &at, o->path[F_CA], true))
        return str_why(why, why_len, "a malformed certificate set (%zu bytes)", len);
    for (int k = 0; k < F_N; k++) {
        int i = pem_order[k];
        if (len - at < 4 || get32(p + at) > len - at - 4)
            return str_why(why, why_len, "a malformed certificate set (%zu bytes)", len);
        o->len[i] = get32(p + at);
        o->pem[i] = (char *)p + at + 4;
        at += 4 + o->len[i];
    }
    if (at != len || !o->len[F_KEY] || !o->len[F_CRT] || !o->path[F_CA][0] != !o->len[F_CA])
        return str_why(why, why_len, "a malformed certificate set (%zu bytes)", len);
    for (int i = 0; i < F_N; i++)
        if (o->path[i][0] && !home_path_ok(o->uid, o->path[i]))
            return str_why(why, why_len, "%s: not a certificate file of container %u's home",
                           o->path[i], (unsigned)o->uid);
    return 0;
}

/* Room for a new set of `sender` for uid: neither bound is reached (one
 * customer cannot take all of a member's room). */
static int set_room(clustercerts_t *cc, const char *sender, uid_t uid, char *why, size_t why_len)
{
    size_t of_sender = 0, of_uid = 0;
    for (size_t i = 0; i < cc->n; i++) {
        of_sender += !strcmp(cc->s[i].sender, sender);
        of_uid += !strcmp(cc->s[i].sender, sender) && cc->s[i].uid == uid;
    }
    if (of_sender >= cc->max_sets)
        return str_why(why, why_len, "member %s already has %zu certificate sets here", sender,
                       of_sender);
    if (of_uid >= CLUSTERCERTS_MAX_UID_SETS)
        return str_why(why, why_len,
                       "member %s already has %zu certificate sets of container %u here",
                       sender, of_uid, (unsigned)uid);
    struct set *grown = array_room(cc->s, cc->n, &cc->cap, sizeof *grown);
    if (!grown)
        return str_why(why, why_len, "the node is out of memory");
    cc->s = grown;
    return 0;
}

/* A subscription standing for set st: what clustercerts_digest reads. */
static void sub_of(const struct set *st, subscription_t *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", st->name);
    snprintf(s->tls.key, sizeof s->tls.key, "%s", st->path[F_KEY]);
    snprintf(s->tls.crt, sizeof s->tls.crt, "%s", st->path[F_CRT]);
    snprintf(s->tls.ca, sizeof s->tls.ca, "%s", st->path[F_CA]);
    s->tls.any = true;
}

/* Remember the digest of st's copies as written (what held() compares:
 * the node's cleaning may not give the sender's bytes back). */
static int copies_digest(clustercerts_t *cc, struct set *st, char *why, size_t why_len)
{
    subscription_t s;
    sub_of(st, &s);
    return clustercerts_digest(subcerts_router_homes(cc->certs), st->uid, &s, st->copies, why,
                               why_len);
}

static int install_parsed(clustercerts_t *cc, const char *sender, struct parsed *o,
                          long long now_ms, char *why, size_t why_len)
{
    const char *path[F_N] = {o->path[F_KEY], o->path[F_CRT],
                             o->path[F_CA][0] ? o->path[F_CA] : NULL};
    unsigned char digest[CLUSTERCERTS_DIGEST];
    digest_of((const unsigned char *const *)o->pem, o->len, digest);
    struct ask *asked = ask_take(cc, sender, o->uid, path[F_KEY], digest, now_ms);
    if (!asked)
        return str_why(why, why_len,
                       "a certificate set from %s this node did not ask for (%s of container "
                       "%u): ignored",
                       sender, o->name, (unsigned)o->uid);
    asked->until_ms = 0; /* one CERT per NEED */
    struct set *st = set_find(cc, o->uid, o->name, path);
    if (!st && set_room(cc, sender, o->uid, why, why_len) < 0)
        return -1;
    char home[64];
    int rc = subcerts_install_set(cc->certs, o->uid, o->name, path, home_of(o->uid, home),
                                  o->pem, o->len, why, why_len);
    /* A set refused is not asked for again for a while: it would
     * otherwise cost a 60 KB CERT and a full check every 2 s.  The node's
     * own failure (-2) is tried again at the next announcement. */
    if (rc == -1)
        ask_put(cc->refused, CLUSTERCERTS_REFUSED, sender, o->uid, NULL, digest,
                now_ms + CLUSTERCERTS_REFUSED_MS);
    if (rc < 0)
        return -1;
    if (!st) {
        st = &cc->s[cc->n++];
        memset(st, 0, sizeof *st);
        st->uid = o->uid;
        snprintf(st->name, sizeof st->name, "%s", o->name);
        for (int i = 0; i < F_N; i++)
            snprintf(st->path[i], sizeof st->path[i], "%s", o->path[i]);
    }
    snprintf(st->sender, sizeof st->sender, "%s", sender);
    memcpy(st->digest, digest, sizeof digest);
    st->seen_ms = now_ms;
    return copies_digest(cc, st, why, why_len);
}

int clustercerts_install(clustercerts_t *cc, const char *sender, unsigned char *payload,
                         size_t len, long long now_ms, char *why, size_t why_len)
{
    struct parsed o;
    memset(&o, 0, sizeof o);
    int rc = payload_parse(payload, len, &o, why, why_len);
    if (rc == 0)
        rc = install_parsed(cc, sender, &o, now_ms, why, why_len);
    sodium_memzero(payload, len); /* the private key */
    return rc;
}

void clustercerts_sweep(clustercerts_t *cc, long long now_ms)
{
    for (size_t i = 0; cc && i < cc->n;) {
        struct set *st = &cc->s[i];
        if (now_ms - st->seen_ms <= cc->forget_ms) {
            i++;
            continue;
        }
        const char *path[F_N] = {st->path[F_KEY], st->path[F_CRT],
                                 st->path[F_CA][0] ? st->path[F_CA] : NULL};
        char home[64];
        /* subcerts keeps the copies another user (a local entry, another
         * set) still names. */
        subcerts_remove_set(cc->certs, st->uid, st->name, path, home_of(st->uid, home));
        cc->s[i] = cc->s[--cc->n];
    }
}

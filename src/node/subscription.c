/* subscription.c - parse a uWSGI subscription packet and apply the node's
 * address policy (subscription.h). */
#include "subscription.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../common/strutil.h"
#include "../common/validate.h"

#define UWSGI_SUBSCRIPTION_MODIFIER1 224

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static bool named(const unsigned char *k, size_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

/* Copy a value that must be printable text, without NULs. */
static bool copy_text(char *dst, size_t cap, const unsigned char *v, size_t vlen)
{
    if (vlen >= cap)
        return false;
    for (size_t i = 0; i < vlen; i++)
        if (v[i] < 0x20 || v[i] == 0x7f)
            return false;
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
    return true;
}

/* A socket file name the router will connect to without surprises: no '/'
 * (the name is the last component), no ':' (uWSGI would read host:port),
 * no ',' (uWSGI would read ",modifier1"), not "." or "..". */
static bool socket_name_ok(const char *s)
{
    if (!*s || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-' || *s == '_'))
            return false;
    return true;
}

static int check_address(const char *addr, uid_t uid, char *why, size_t why_len)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "/containers/%u/run/", (unsigned)uid);
    size_t plen = strlen(prefix);
    if (strncmp(addr, prefix, plen) != 0 || !socket_name_ok(addr + plen))
        return str_why(why, why_len,
                       "address %s: a subscription may only name a unix socket directly in "
                       "%s (a name of letters, digits, '.', '-', '_')",
                       addr, prefix);
    return 0;
}

/* A path of the sender's home: /containers/<uid>/<rel>, every component of
 * <rel> a name (not empty, ".", ".."), and not under run/ (the router's
 * sockets directory, not the customer's files). */
static int check_home_path(const char *field, const char *path, uid_t uid, size_t *home_len,
                           char *why, size_t why_len)
{
    char home[64];
    snprintf(home, sizeof home, "/containers/%u/", (unsigned)uid);
    size_t hl = strlen(home);
    const char *rel = path + hl;
    bool ok = strncmp(path, home, hl) == 0 && *rel;
    int depth = 0;
    for (const char *c = rel; ok && *c; depth++) {
        size_t n = strcspn(c, "/");
        ok = n > 0 && !(n == 1 && c[0] == '.') && !(n == 2 && c[0] == '.' && c[1] == '.') &&
             !(c == rel && n == 3 && !strncmp(c, "run", 3)) && (c[n] == '\0' || c[n + 1]);
        c += n + (c[n] == '/');
    }
    if (ok && depth > SUBSCRIPTION_PATH_DEPTH)
        return str_why(why, why_len,
                       "%s %s: a certificate file path may have at most %d components under "
                       "your home",
                       field, path, SUBSCRIPTION_PATH_DEPTH);
    if (!ok)
        return str_why(why, why_len,
                       "%s %s: a certificate file must be in your home, %s<path> ($(HOME)/...), "
                       "without '.' or '..' components and not under run/",
                       field, path, home);
    *home_len = hl;
    return 0;
}

/* The ACME pair of `key` (auto-ssl-domain): its file names are the key. */
static bool acme_path(const char *path, const char *key, const char *ext)
{
    size_t cl = strlen(SUBSCRIPTION_ACME_CERTS), kl = strlen(key);
    if (!socket_name_ok(key) || strstr(key, ".."))
        return false;
    return !strncmp(path, SUBSCRIPTION_ACME_CERTS, cl) && !strncmp(path + cl, key, kl) &&
           !strcmp(path + cl + kl, ext);
}

/* The sni_* fields, once the key is known: both of the pair or neither, a
 * CA only with them; each path the sender's or the key's ACME pair. */
static int check_tls(subscription_t *out, uid_t uid, char *why, size_t why_len)
{
    subscription_tls_t *t = &out->tls;
    bool has_key = t->key[0], has_crt = t->crt[0];
    if (!has_key && !has_crt && !t->ca[0])
        return 0;
    if (!has_key && !has_crt)
        return str_why(why, why_len,
                       "sni_ca needs sni_key and sni_crt (ssl-ca-domain = name key "
                       "crt [!]ca)");
    if (!has_key || !has_crt)
        return str_why(why, why_len, "sni_key and sni_crt go together (ssl-domain = name key crt)");
    t->any = true;
    if (acme_path(t->key, out->key, ".key") && acme_path(t->crt, out->key, ".crt")) {
        t->acme = true;
        if (t->ca[0])
            return str_why(why, why_len,
                           "sni_ca goes with your own key and certificate, not "
                           "with auto-ssl-domain");
        return 0;
    }
    size_t hl = 0;
    if (check_home_path("sni_key", t->key, uid, &hl, why, why_len) < 0 ||
        check_home_path("sni_crt", t->crt, uid, &hl, why, why_len) < 0 ||
        (t->ca[0] && check_home_path("sni_ca", t->ca, uid, &hl, why, why_len) < 0))
        return -1;
    t->home_len = hl;
    return 0;
}

/* sni_key, sni_crt, sni_ca (its '!' noted and removed): text, once each. */
static int take_tls_field(subscription_tls_t *t, const unsigned char *k, size_t klen,
                          const unsigned char *v, size_t vlen, char *why, size_t why_len)
{
    char *dst = named(k, klen, "sni_key") ? t->key : named(k, klen, "sni_crt") ? t->crt : t->ca;
    if (dst == t->ca && vlen && v[0] == '!') {
        t->ca_required = true;
        v++;
        vlen--;
    }
    if (dst[0] || !vlen || !copy_text(dst, sizeof t->key, v, vlen))
        return str_why(why, why_len, "malformed or repeated %.*s (at most 255 bytes)", (int)klen,
                       (const char *)k);
    return 0;
}

int subscription_parse(const unsigned char *pkt, size_t len, subscription_t *out, char *why,
                       size_t why_len)
{
    memset(out, 0, sizeof *out);
    if (len < 4 || pkt[0] != UWSGI_SUBSCRIPTION_MODIFIER1)
        return str_why(why, why_len, "not a uWSGI subscription packet");
    if (le16(pkt + 1) != len - 4)
        return str_why(why, why_len, "malformed packet: size %u, body %zu bytes", le16(pkt + 1),
                       len - 4);
    if (pkt[3] > 1)
        return str_why(why, why_len, "unknown subscription command %u", pkt[3]);
    out->unsubscribe = pkt[3] == 1;
    bool have_key = false, have_addr = false;
    size_t off = 4;
    while (off < len) {
        if (len - off < 2)
            return str_why(why, why_len, "malformed packet: truncated item");
        size_t item = off;
        size_t klen = le16(pkt + off);
        off += 2;
        if (len - off < klen + 2)
            return str_why(why, why_len, "malformed packet: truncated item");
        const unsigned char *k = pkt + off;
        off += klen;
        size_t vlen = le16(pkt + off);
        off += 2;
        if (len - off < vlen)
            return str_why(why, why_len, "malformed packet: truncated value");
        const unsigned char *v = pkt + off;
        off += vlen;
        if (named(k, klen, "key")) {
            if (have_key || !vlen || !copy_text(out->key, sizeof out->key, v, vlen))
                return str_why(why, why_len, "malformed or repeated key");
            have_key = true;
        } else if (named(k, klen, "address")) {
            if (have_addr || !copy_text(out->address, sizeof out->address, v, vlen))
                return str_why(why, why_len, "malformed or repeated address");
            have_addr = true;
        } else if (named(k, klen, "sni_key") || named(k, klen, "sni_crt") ||
                   named(k, klen, "sni_ca")) {
            if (take_tls_field(&out->tls, k, klen, v, vlen, why, why_len) < 0)
                return -1;
        } else if (named(k, klen, "sign")) {
            if (out->sign_len || !vlen)
                return str_why(why, why_len, "malformed or repeated sign");
            out->sign_off = (size_t)(v - pkt);
            out->sign_len = vlen;
            out->signed_len = item - 4;
        } else if (named(k, klen, "notify")) {
            /* The router would send to this path on the sender's word. */
            return str_why(why, why_len, "%.*s is not supported by this node's router", (int)klen,
                           (const char *)k);
        }
    }
    if (!have_key)
        return str_why(why, why_len, "no key (domain) in the subscription");
    if (!have_addr)
        return str_why(why, why_len, "no address in the subscription for %s", out->key);
    return 0;
}

int subscription_check(const unsigned char *pkt, size_t len, uid_t uid, subscription_t *out,
                       char *why, size_t why_len)
{
    if (uid <= UID_BASE) {
        memset(out, 0, sizeof *out);
        return str_why(why, why_len, "sender uid %u is not a container's", (unsigned)uid);
    }
    if (subscription_parse(pkt, len, out, why, why_len) < 0 ||
        check_address(out->address, uid, why, why_len) < 0)
        return -1;
    return check_tls(out, uid, why, why_len);
}

int subscription_check_cluster(const unsigned char *pkt, size_t len, uid_t uid,
                               const char *endpoint, subscription_t *out, char *why,
                               size_t why_len)
{
    if (uid <= UID_BASE) {
        memset(out, 0, sizeof *out);
        return str_why(why, why_len, "sender uid %u is not a container's", (unsigned)uid);
    }
    if (subscription_parse(pkt, len, out, why, why_len) < 0)
        return -1;
    if (out->address[0] != '/') {
        /* The only TCP address: this node's fastrouter, which the other
         * members' routers reach (IMPERIUM_CLUSTER in the container). */
        if (!endpoint || !*endpoint || !strcmp(out->address, SUBSCRIPTION_NO_CLUSTER) ||
            !strcmp(endpoint, SUBSCRIPTION_NO_CLUSTER))
            return str_why(why, why_len,
                           "this server is in no legion: %s is served by this node only",
                           out->key);
        if (strcmp(out->address, endpoint) != 0)
            return str_why(why, why_len,
                           "address %s: a cluster subscription may only name this node's "
                           "cluster endpoint %s ($(IMPERIUM_CLUSTER)) or a unix socket in "
                           "your run/",
                           out->address, endpoint);
        out->tcp = true;
    } else if (check_address(out->address, uid, why, why_len) < 0) {
        return -1;
    }
    return check_tls(out, uid, why, why_len);
}

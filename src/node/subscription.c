/* subscription.c - parse a uWSGI subscription packet and apply the node's
 * address policy (subscription.h). */
#include "subscription.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../common/validate.h"

#define UWSGI_SUBSCRIPTION_MODIFIER1 224

static int refuse(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return -1;
}

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
        return refuse(why, why_len,
                      "address %s: a subscription may only name a unix socket directly in "
                      "%s (a name of letters, digits, '.', '-', '_')",
                      addr, prefix);
    return 0;
}

int subscription_check(const unsigned char *pkt, size_t len, uid_t uid, subscription_t *out,
                       char *why, size_t why_len)
{
    memset(out, 0, sizeof *out);
    if (uid <= UID_BASE)
        return refuse(why, why_len, "sender uid %u is not a container's", (unsigned)uid);
    if (len < 4 || pkt[0] != UWSGI_SUBSCRIPTION_MODIFIER1)
        return refuse(why, why_len, "not a uWSGI subscription packet");
    if (le16(pkt + 1) != len - 4)
        return refuse(why, why_len, "malformed packet: size %u, body %zu bytes", le16(pkt + 1),
                      len - 4);
    if (pkt[3] > 1)
        return refuse(why, why_len, "unknown subscription command %u", pkt[3]);
    out->unsubscribe = pkt[3] == 1;
    bool have_key = false, have_addr = false;
    size_t off = 4;
    while (off < len) {
        if (len - off < 2)
            return refuse(why, why_len, "malformed packet: truncated item");
        size_t klen = le16(pkt + off);
        off += 2;
        if (len - off < klen + 2)
            return refuse(why, why_len, "malformed packet: truncated item");
        const unsigned char *k = pkt + off;
        off += klen;
        size_t vlen = le16(pkt + off);
        off += 2;
        if (len - off < vlen)
            return refuse(why, why_len, "malformed packet: truncated value");
        const unsigned char *v = pkt + off;
        off += vlen;
        if (named(k, klen, "key")) {
            if (have_key || !vlen || !copy_text(out->key, sizeof out->key, v, vlen))
                return refuse(why, why_len, "malformed or repeated key");
            have_key = true;
        } else if (named(k, klen, "address")) {
            if (have_addr || !copy_text(out->address, sizeof out->address, v, vlen))
                return refuse(why, why_len, "malformed or repeated address");
            have_addr = true;
        } else if (named(k, klen, "notify") || named(k, klen, "sni_key") ||
                   named(k, klen, "sni_crt") || named(k, klen, "sni_ca")) {
            /* The router would open these paths (or send to them) on the
             * sender's word: nothing here needs them until the HTTPS router
             * exists. */
            return refuse(why, why_len, "%.*s is not supported by this node's router", (int)klen,
                          (const char *)k);
        }
    }
    if (!have_key)
        return refuse(why, why_len, "no key (domain) in the subscription");
    if (!have_addr)
        return refuse(why, why_len, "no address in the subscription for %s", out->key);
    return check_address(out->address, uid, why, why_len);
}

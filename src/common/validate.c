#include "validate.h"
#include "strutil.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long long container_uid(long long id) { return UID_BASE + id; }

long long parse_id(const char *seg)
{
    long long v;
    if (!seg || !isdigit((unsigned char)seg[0]) || !str_to_ll(seg, &v) || v <= 0)
        return -1;
    return v;
}

long long container_id_of_uid(long long uid) { return uid > UID_BASE ? uid - UID_BASE : -1; }

long long container_id_from_uid(const char *seg) { return container_id_of_uid(parse_id(seg)); }

bool container_ip(long long id, char *out, size_t len)
{
    long long n = id + 2;
    if (id < 1 || n > 0xfffffe) /* 10.255.255.255 is the broadcast address */
        return false;
    snprintf(out, len, "10.%lld.%lld.%lld", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    return true;
}

void container_hostname(const char *name, char *out, size_t len)
{
    size_t i = 0;
    for (; name[i] && i + 1 < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        out[i] = (char)((isascii(ch) && isalnum(ch)) || ch == '-' ? ch : '-');
    }
    out[i] = '\0';
}

static const char *const key_types[] = {
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com", NULL,
};

#define KEY_MAX 16384

bool ssh_key_valid(const char *key, char *reason, size_t len)
{
    size_t klen = strlen(key);
    if (klen == 0 || klen > KEY_MAX) {
        snprintf(reason, len, "an ssh key must be 1 to %d characters", KEY_MAX);
        return false;
    }
    for (const char *p = key; *p; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\0') {
            snprintf(reason, len, "an ssh key must be a single line");
            return false;
        }
    }
    const char *sp = strchr(key, ' ');
    size_t tlen = sp ? (size_t)(sp - key) : klen;
    bool known = false;
    for (const char *const *t = key_types; *t; t++)
        if (strlen(*t) == tlen && strncmp(*t, key, tlen) == 0)
            known = true;
    if (!known || !sp) {
        snprintf(reason, len,
                 "not an OpenSSH public key: expected '<type> <base64> [comment]' with a "
                 "type such as ssh-ed25519 or ssh-rsa");
        return false;
    }
    const char *b64 = sp + 1;
    const char *end = strchr(b64, ' ');
    size_t blen = end ? (size_t)(end - b64) : strlen(b64);
    unsigned char *bin = malloc(blen + 1);
    size_t binlen = 0;
    const char *stop = NULL;
    bool ok = bin && blen > 0 &&
              sodium_base642bin(bin, blen, b64, blen, NULL, &binlen, &stop,
                                sodium_base64_VARIANT_ORIGINAL) == 0 &&
              stop == b64 + blen;
    /* The blob starts with the key type again, as a length-prefixed string. */
    if (ok)
        ok = binlen >= 4 + tlen &&
             ((size_t)bin[0] << 24 | (size_t)bin[1] << 16 | (size_t)bin[2] << 8 | bin[3]) ==
                 tlen &&
             memcmp(bin + 4, key, tlen) == 0;
    free(bin);
    if (!ok) {
        snprintf(reason, len, "the ssh key's base64 part is not a valid %.*s key",
                 (int)tlen, key);
        return false;
    }
    return true;
}

bool domain_name_normalize(const char *in, char *out, size_t len, char *reason, size_t rlen)
{
    size_t n = strlen(in);
    if (n > 0 && in[n - 1] == '.')
        n--;
    bool wildcard = n > 0 && in[0] == '.';
    const char *name = in + wildcard;
    size_t nlen = n - wildcard;
    if (nlen == 0 || nlen > 253 || n + 1 > len) {
        snprintf(reason, rlen, "a domain name must be 1 to 253 characters");
        return false;
    }
    int labels = 0;
    size_t label_len = 0;
    for (size_t i = 0; i <= nlen; i++) {
        char ch = i < nlen ? (char)tolower((unsigned char)name[i]) : '.';
        if (ch == '.') {
            if (label_len == 0 || label_len > 63 || name[i - 1] == '-' ||
                name[i - label_len] == '-') {
                snprintf(reason, rlen,
                         "not a valid domain name: each label must be 1 to 63 letters, "
                         "digits or '-', not starting or ending with '-'");
                return false;
            }
            labels++;
            label_len = 0;
            continue;
        }
        if (!(isascii((unsigned char)ch) && (isalnum((unsigned char)ch) || ch == '-'))) {
            /* Name the character without splitting a UTF-8 sequence or
             * echoing control bytes: the reason goes into JSON. */
            unsigned char bad = (unsigned char)name[i];
            if (isascii(bad) && isprint(bad))
                snprintf(reason, rlen,
                         "not a valid domain name: '%c' is not allowed (letters, digits, "
                         "'-' and '.' only)",
                         bad);
            else
                snprintf(reason, rlen,
                         "not a valid domain name: byte 0x%02x is not allowed (letters, "
                         "digits, '-' and '.' only; write internationalised names in "
                         "punycode)",
                         bad);
            return false;
        }
        label_len++;
    }
    if (labels < 2) {
        snprintf(reason, rlen, "not a valid domain name: it needs at least one dot");
        return false;
    }
    size_t o = 0;
    if (wildcard)
        out[o++] = '.';
    for (size_t i = 0; i < nlen; i++)
        out[o++] = (char)tolower((unsigned char)name[i]);
    out[o] = '\0';
    return true;
}

/* Directories of the home the platform manages: a mount over (or inside)
 * one would hide the Emperor's vassals, its logs, the node's etc files or
 * the authorized keys the API writes. */
static const char *const loopbox_reserved[] = {"etc", "logs", "run", "tmp", "vassals", ".ssh",
                                               NULL};

bool loopbox_path_valid(const char *path, size_t max_len, char *reason, size_t rlen)
{
    static const char *const bad[] = {"..", "./", "/.", "//", NULL};
    size_t len = strlen(path);
    if (len == 0 || len > max_len)
        return snprintf(reason, rlen, "must be 1 to %zu characters", max_len), false;
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return snprintf(reason, rlen, "must not contain control characters"), false;
    if (path[0] == '/' || path[len - 1] == '/')
        return snprintf(reason, rlen,
                        "must be relative to the container home, not starting or ending "
                        "with '/'"),
               false;
    for (const char *const *b = bad; *b; b++)
        if (strstr(path, *b))
            return snprintf(reason, rlen, "must not contain '%s'", *b), false;
    if (strcmp(path, ".") == 0)
        return snprintf(reason, rlen, "must not be '.' (the container home itself)"), false;
    for (const char *const *d = loopbox_reserved; *d; d++) {
        size_t dlen = strlen(*d);
        if (strncmp(path, *d, dlen) == 0 && (path[dlen] == '\0' || path[dlen] == '/'))
            return snprintf(reason, rlen,
                            "must not be '%s' or lie inside it: the platform manages "
                            "that directory",
                            *d),
                   false;
    }
    return true;
}

/* Public ports the platform itself uses on every node (ssh, the HTTP(S)
 * router, the alternative ssh and HTTP ports); ports below 1025 are refused
 * by the range check as well. */
static const long long portmap_reserved[] = {22, 80, 443, 2222, 8000, 8080, 8443};

bool portmap_public_port_valid(long long port, char *reason, size_t rlen)
{
    if (port < 1025 || port > 65535)
        return snprintf(reason, rlen, "'public_port' must be 1025 to 65535"), false;
    for (size_t i = 0; i < sizeof portmap_reserved / sizeof portmap_reserved[0]; i++)
        if (port == portmap_reserved[i])
            return snprintf(reason, rlen, "public port %lld is used by the platform itself",
                            port),
                   false;
    return true;
}

bool portmap_private_port_valid(long long port, char *reason, size_t rlen)
{
    if (port < 1024 || port > 65535)
        return snprintf(reason, rlen, "'private_port' must be 1024 to 65535"), false;
    return true;
}

bool custom_distro_path_valid(const char *path, char *reason, size_t rlen)
{
    size_t len = strlen(path);
    if (len == 0 || len > 255)
        return snprintf(reason, rlen, "'path' must be 1 to 255 characters"), false;
    if (strcmp(path, ".") == 0 || strcmp(path, "..") == 0)
        return snprintf(reason, rlen, "'path' cannot be '.' or '..'"), false;
    for (const char *p = path; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (!(isascii(ch) && (isalnum(ch) || ch == '.' || ch == '_' || ch == '-')))
            return snprintf(reason, rlen,
                            "'path' may contain only letters, digits, '.', '_' and '-'"),
                   false;
    }
    return true;
}

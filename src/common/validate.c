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

long long container_id_from_uid(const char *seg)
{
    long long uid = parse_id(seg);
    return uid > UID_BASE ? uid - UID_BASE : -1;
}

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
                         "'%s' is not a valid domain name: each label must be 1 to 63 "
                         "letters, digits or '-', not starting or ending with '-'",
                         in);
                return false;
            }
            labels++;
            label_len = 0;
            continue;
        }
        if (!(isascii((unsigned char)ch) && (isalnum((unsigned char)ch) || ch == '-'))) {
            snprintf(reason, rlen, "'%s' is not a valid domain name: '%c' is not allowed",
                     in, name[i]);
            return false;
        }
        label_len++;
    }
    if (labels < 2) {
        snprintf(reason, rlen, "'%s' is not a valid domain name: it needs a dot", in);
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

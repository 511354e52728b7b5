#include "validate.h"
#include "strutil.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && n + 1 < len; p++) {
        /* The public platform replaced each character, not each byte: a
         * UTF-8 continuation byte belongs to the '-' of its lead byte. */
        if ((*p & 0xc0) == 0x80)
            continue;
        out[n++] = (char)((isascii(*p) && isalnum(*p)) || *p == '-' ? *p : '-');
    }
    if (len)
        out[n] = '\0';
}

static const char *const key_types[] = {
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com", NULL,
};

#define KEY_MAX 16384

/* The options sshd(8) knows before the key type (AUTHORIZED_KEYS FILE
 * FORMAT); `value` ones take ="...".  sshd matches names without case. */
static const struct {
    const char *name;
    bool value;
} key_options[] = {
    {"agent-forwarding", false}, {"cert-authority", false}, {"command", true},
    {"environment", true},       {"expiry-time", true},     {"from", true},
    {"no-agent-forwarding", false}, {"no-port-forwarding", false}, {"no-pty", false},
    {"no-touch-required", false}, {"no-user-rc", false},    {"no-X11-forwarding", false},
    {"permitlisten", true},      {"permitopen", true},      {"port-forwarding", false},
    {"principals", true},        {"pty", false},            {"restrict", false},
    {"tunnel", true},            {"user-rc", false},        {"verify-required", false},
    {"X11-forwarding", false},   {"touch-required", false}, {"no-verify-required", false},
};

/* The values sshd parses, not just carries: a line it cannot read is
 * silently skipped at login, so the key would never work.  tunnel="N"
 * (a device number); expiry-time="YYYYMMDD[HHMM[SS]][Z]". */
static bool option_value_ok(const char *name, const char *v, size_t n)
{
    size_t digits = 0;
    while (digits < n && isdigit((unsigned char)v[digits]))
        digits++;
    if (strcasecmp(name, "tunnel") == 0)
        return n > 0 && digits == n;
    if (strcasecmp(name, "expiry-time") == 0) {
        size_t z = (n > 0 && (v[n - 1] == 'Z' || v[n - 1] == 'z')) ? 1 : 0;
        return digits == n - z && (digits == 8 || digits == 12 || digits == 14);
    }
    return true;
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* The length of the word at s (up to a space, a tab or the end). */
static size_t word_len(const char *s)
{
    size_t n = 0;
    while (s[n] && !is_blank(s[n]))
        n++;
    return n;
}

static const char *skip_blanks(const char *s)
{
    while (is_blank(*s))
        s++;
    return s;
}

static bool is_key_type(const char *s, size_t n)
{
    for (const char *const *t = key_types; *t; t++)
        if (strlen(*t) == n && strncmp(*t, s, n) == 0)
            return true;
    return false;
}

static bool key_fail(char *reason, size_t len, const char *what)
{
    snprintf(reason, len, "%s", what);
    return false;
}

/* A quoted option value at *p (which points at the opening quote), where
 * \" is a quote inside it, as sshd's opt_dequote reads it; *p ends after
 * the closing quote. */
static bool option_value(const char **p)
{
    const char *s = *p + 1;
    for (; *s && *s != '"'; s++)
        if (s[0] == '\\' && s[1] == '"')
            s++;
    if (*s != '"')
        return false;
    *p = s + 1;
    return true;
}

/* One option at *p ("no-pty", "from=\"10.0.0.0/8\""); *p ends after it.
 * Option names are [A-Za-z0-9-], so a reason that names one is plain ASCII. */
static bool key_option(const char **p, char *reason, size_t len)
{
    const char *s = *p;
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '-')
        n++;
    size_t i = 0, count = sizeof key_options / sizeof key_options[0];
    while (i < count && !(strlen(key_options[i].name) == n &&
                          strncasecmp(key_options[i].name, s, n) == 0))
        i++;
    if (n == 0)
        return key_fail(reason, len,
                        "the ssh key's options must be names such as no-pty or "
                        "from=\"...\", separated by commas");
    if (i == count) {
        snprintf(reason, len,
                 "unknown ssh key option '%.*s' (sshd's authorized_keys options only, such "
                 "as from=\"...\", no-pty, command=\"...\", restrict)",
                 (int)n, s);
        return false;
    }
    s += n;
    if (key_options[i].value) {
        if (s[0] != '=' || s[1] != '"') {
            snprintf(reason, len, "ssh key option '%s' needs a quoted value: %s=\"...\"",
                     key_options[i].name, key_options[i].name);
            return false;
        }
        s++;
        const char *value = s + 1;
        if (!option_value(&s)) {
            snprintf(reason, len, "ssh key option '%s': unterminated quote",
                     key_options[i].name);
            return false;
        }
        if (!option_value_ok(key_options[i].name, value, (size_t)(s - 1 - value))) {
            snprintf(reason, len,
                     "ssh key option '%s': sshd cannot read this value (tunnel=\"N\", "
                     "expiry-time=\"YYYYMMDD[HHMM[SS]][Z]\")",
                     key_options[i].name);
            return false;
        }
    }
    if (*s != ',' && *s != '\0' && !is_blank(*s)) {
        snprintf(reason, len, "ssh key option '%s' must be followed by ',' or a space",
                 key_options[i].name);
        return false;
    }
    *p = s;
    return true;
}

/* The options before the key type: comma-separated, no blank outside
 * quotes.  On true, *p points at the blank after them. */
static bool key_options_valid(const char **p, char *reason, size_t len)
{
    for (;;) {
        if (!key_option(p, reason, len))
            return false;
        if (**p != ',')
            return true;
        (*p)++;
    }
}

/* The blob: base64 of the key, which starts with its type again as a
 * length-prefixed string. */
static bool key_blob_valid(const char *b64, size_t blen, const char *type, size_t tlen)
{
    unsigned char *bin = malloc(blen + 1);
    size_t binlen = 0;
    const char *stop = NULL;
    bool ok = bin && blen > 0 &&
              sodium_base642bin(bin, blen, b64, blen, NULL, &binlen, &stop,
                                sodium_base64_VARIANT_ORIGINAL) == 0 &&
              stop == b64 + blen;
    if (ok)
        ok = binlen >= 4 + tlen &&
             ((size_t)bin[0] << 24 | (size_t)bin[1] << 16 | (size_t)bin[2] << 8 | bin[3]) ==
                 tlen &&
             memcmp(bin + 4, type, tlen) == 0;
    free(bin);
    return ok;
}

/* A comment holding a key type word is a second key on the line. */
static bool comment_has_key(const char *c)
{
    for (c = skip_blanks(c); *c; c = skip_blanks(c + word_len(c)))
        if (is_key_type(c, word_len(c)))
            return true;
    return false;
}

bool ssh_key_valid(const char *key, char *reason, size_t len)
{
    size_t klen = strlen(key);
    if (klen == 0 || klen > KEY_MAX) {
        snprintf(reason, len, "an ssh key must be 1 to %d characters", KEY_MAX);
        return false;
    }
    if (strpbrk(key, "\r\n"))
        return key_fail(reason, len, "an ssh key must be a single line");
    const char *p = skip_blanks(key);
    /* As sshd: a line not starting with a key type starts with options. */
    if (!is_key_type(p, word_len(p))) {
        const char *type = skip_blanks(p + word_len(p));
        if (!strchr(p, '"') && !is_key_type(type, word_len(type)))
            return key_fail(reason, len,
                            "not an OpenSSH public key: expected '[options] <type> <base64> "
                            "[comment]' with a type such as ssh-ed25519 or ssh-rsa");
        if (!key_options_valid(&p, reason, len))
            return false;
        p = skip_blanks(p);
    }
    const char *type = p;
    size_t tlen = word_len(type);
    if (!is_key_type(type, tlen))
        return key_fail(reason, len,
                        "not an OpenSSH public key: expected '[options] <type> <base64> "
                        "[comment]' with a type such as ssh-ed25519 or ssh-rsa");
    const char *b64 = skip_blanks(type + tlen);
    size_t blen = word_len(b64);
    if (!key_blob_valid(b64, blen, type, tlen)) {
        snprintf(reason, len, "the ssh key's base64 part is not a valid %.*s key", (int)tlen,
                 type);
        return false;
    }
    if (comment_has_key(b64 + blen))
        return key_fail(reason, len,
                        "one key per line: the comment holds a second key (send each key as "
                        "its own list item)");
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
 * router, the alternative ssh and HTTP ports, the legions' cluster_port and
 * cluster_gate_port); ports below 1025 are refused by the range check as
 * well.  And the default legion ports of the first legions (legion_port
 * 4242 + the legion's id): the node itself refuses a mapping of whatever
 * ports its own settings give (docs/CLUSTER.md). */
static const long long portmap_reserved[] = {22, 80, 443, 2222, 3032, 3033, 8000, 8080, 8443};
#define PORTMAP_LEGION_FIRST 4242
#define PORTMAP_LEGION_LAST 4341

bool portmap_public_port_valid(long long port, char *reason, size_t rlen)
{
    if (port < 1025 || port > 65535)
        return snprintf(reason, rlen, "'public_port' must be 1025 to 65535"), false;
    bool ours = port >= PORTMAP_LEGION_FIRST && port <= PORTMAP_LEGION_LAST;
    for (size_t i = 0; !ours && i < sizeof portmap_reserved / sizeof portmap_reserved[0]; i++)
        ours = port == portmap_reserved[i];
    if (ours)
        return snprintf(reason, rlen, "public port %lld is used by the platform itself", port),
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

bool alarm_token_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (n >= ALARM_TOKEN_MAX ||
            !(isascii(ch) && (isalnum(ch) || ch == '.' || ch == '_' || ch == '-')))
            return false;
    }
    return n > 0;
}

bool str_has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* One jid of jid_destinations, len bytes at j: [local@]domain[/resource]. */
static bool jid_looks_valid(const char *j, size_t len)
{
    if (len == 0 || len > 256)
        return false;
    size_t slash = 0;
    while (slash < len && j[slash] != '/')
        slash++;
    if (slash < len && slash + 1 == len)
        return false; /* an empty resource */
    const char *at = memchr(j, '@', slash);
    const char *dom = at ? at + 1 : j;
    size_t dlen = slash - (size_t)(dom - j);
    if ((at && at == j) || dlen == 0 || memchr(dom, '@', dlen))
        return false;
    for (size_t i = 0; i < dlen; i++) {
        unsigned char ch = (unsigned char)dom[i];
        if (!(isalnum(ch) || ch == '.' || ch == '-' || ch >= 0x80))
            return false;
    }
    return dom[0] != '.' && dom[0] != '-';
}

bool jid_destinations_valid(const char *list, char *reason, size_t rlen)
{
    if (str_has_control(list))
        return snprintf(reason, rlen, "'jid_destinations' must not contain control characters"),
               false;
    size_t count = 0;
    for (const char *p = list;;) {
        p += strspn(p, ", ");
        if (!*p)
            return true;
        size_t len = strcspn(p, ", ");
        if (++count > JID_DESTINATIONS_MAX)
            return snprintf(reason, rlen, "'jid_destinations' holds at most %d jids",
                            JID_DESTINATIONS_MAX),
                   false;
        if (!jid_looks_valid(p, len))
            return snprintf(reason, rlen,
                            "'jid_destinations': %.*s is not a jid (user@domain[/resource])",
                            (int)(len > 64 ? 64 : len), p),
                   false;
        p += len;
    }
}

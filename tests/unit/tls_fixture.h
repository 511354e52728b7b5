/* tls_fixture.h - openssl command lines for tests of the certificate
 * files a container names: run in the container's home, what they make
 * is the container's (as when the customer makes it), and a self-signed
 * pair.  Define TLS_FIXTURE_HOME (an expression: the home's path) and
 * TLS_FIXTURE_UID (its owner) before including it. */
#ifndef IMP_TEST_TLS_FIXTURE_H
#define IMP_TEST_TLS_FIXTURE_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#if !defined(TLS_FIXTURE_HOME) || !defined(TLS_FIXTURE_UID)
#error "define TLS_FIXTURE_HOME and TLS_FIXTURE_UID before including tls_fixture.h"
#endif

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
    char cmd[2048], full[2300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "cd %s && (%s) >/dev/null 2>&1 && chown -hR %u:%u .",
             TLS_FIXTURE_HOME, cmd, (unsigned)TLS_FIXTURE_UID, (unsigned)TLS_FIXTURE_UID);
    if (system(full) != 0)
        fail_msg("failed: %s", cmd);
}

/* A self-signed pair for `cn` (and `san` when given) as <base>.key/.crt. */
static void pair(const char *base, const char *cn, const char *san)
{
    sh("openssl genrsa -out %s.key 2048 && openssl req -new -key %s.key -out %s.csr -subj /CN=%s",
       base, base, base, cn);
    if (san)
        sh("printf 'subjectAltName=DNS:%s\\n' > %s.ext", san, base);
    sh("openssl x509 -req -days 30 -in %s.csr -signkey %s.key -out %s.crt %s%s%s && rm -f %s.csr "
       "%s.ext",
       base, base, base, san ? "-extfile " : "", san ? base : "", san ? ".ext" : "", base, base);
}

#endif

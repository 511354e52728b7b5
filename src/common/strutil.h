/* strutil.h - small string helpers shared by every binary. */
#ifndef IMP_STRUTIL_H
#define IMP_STRUTIL_H

#include <stdbool.h>
#include <stddef.h>

/* Strip leading and trailing white space in place; returns the new start. */
char *str_trim(char *s);
bool str_starts_with(const char *s, const char *prefix);
/* The number of characters of a UTF-8 string (bytes that are not
 * continuation bytes): API.md's lengths are characters, not bytes. */
size_t str_chars(const char *s);
/* Parse a whole string as a base-10 long long; false on junk or overflow. */
bool str_to_ll(const char *s, long long *out);
/* snprintf into why (a caller's buffer for a refusal's reason); always
 * returns -1, so a check can `return str_why(why, len, "...")`. */
int str_why(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* snprintf into a fresh heap string; NULL on allocation failure. */
char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable byte buffer (always NUL-terminated). */
typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

int buf_append(buf_t *b, const void *data, size_t len);
int buf_appends(buf_t *b, const char *s);
/* Append a formatted string; -1 when out of memory. */
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(buf_t *b);

/* Room for element n of array v (elements of `size` bytes, *cap of them
 * allocated): v when it has it, else v grown (doubling, from 16) and *cap
 * updated; NULL when out of memory or too large (v and *cap unchanged). */
void *array_room(void *v, size_t n, size_t *cap, size_t size);

/* Write a random RFC 4122 version 4 UUID (36 chars + NUL) into out. */
void uuid_v4(char out[37]);

/* Undo the octal escapes of /proc/<pid>/mountinfo and /proc/mounts ("\040"
 * is a space, "\134" a backslash) in place; other bytes stay. */
void str_unescape_octal(char *s);

#endif

/* Unit tests for src/common/settings.c: one table gives the defaults, reads
 * a config file, parses flags (which win) and prints --help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/common/log.h"
#include "../../src/common/settings.h"

typedef struct {
    char listen[16];
    int port;
    const char *config;
    const char *name;
    const char *dir;
    bool verbose;
    bool once;
    enum log_level level;
} opts_t;

static int check_no_colon(const setting_t *s, const char *v, err_t *e)
{
    if (strchr(v, ':'))
        return err_set(e, ERR_INPUT, "%s must not contain ':'", s->name);
    return 0;
}

#define AT(f) SETTING_AT(opts_t, f)
static const setting_t table[] = {
    {"config", 'c', SET_STRP, AT(config), .flags = SET_CMDLINE, .meta = "FILE",
     .help = "read FILE"},
    {"listen", 'l', SET_STR, AT(listen), .def = "127.0.0.1", .meta = "ADDR",
     .help = "address to listen on"},
    {"port", 'p', SET_INT, AT(port), .min = 1, .max = 65535, .idef = 8080, .meta = "N",
     .help = "TCP port"},
    {"server_name", 0, SET_STRP, AT(name), .flags = SET_REQUIRED, .check = check_no_colon,
     .help = "the server's name"},
    {"state_dir", 0, SET_PATH, AT(dir), .def = "/var/lib/x", .meta = "DIR",
     .help = "where the state lives"},
    {"verbose", 0, SET_BOOL, AT(verbose), .flags = SET_FILE, .help = "say more"},
    {"once", 0, SET_BOOL, AT(once), .flags = SET_CMDLINE, .help = "run once"},
    {"log_level", 0, SET_LOG_LEVEL, AT(level), .idef = LOG_INFO, .meta = "LEVEL",
     .help = "error, warn, info or debug"},
    {NULL},
};

static char path[64];

static void write_conf(const char *text)
{
    snprintf(path, sizeof path, "/tmp/imp-settings-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_defaults(void **state)
{
    (void)state;
    opts_t o = {.port = 1, .verbose = true, .level = LOG_ERROR};
    err_t e = {0};
    assert_int_equal(settings_defaults(table, &o, &e), 0);
    assert_string_equal(o.listen, "127.0.0.1");
    assert_int_equal(o.port, 8080);
    assert_string_equal(o.dir, "/var/lib/x");
    assert_false(o.verbose);
    assert_int_equal(o.level, LOG_INFO);
    /* Required and still missing. */
    assert_int_equal(settings_check_required(table, &o, "x.conf", &e), -1);
    assert_non_null(strstr(e.msg, "x.conf: server_name is required"));
}

static void test_file_then_flags(void **state)
{
    (void)state;
    opts_t o = {0};
    err_t e = {0};
    conf_t conf;
    settings_defaults(table, &o, &e);
    write_conf("# comment\nport = 9000\nserver_name = fooserver\nverbose = yes\n"
               "log_level = debug\nlisten = 10.0.0.1\nstate_dir =\n");
    assert_int_equal(settings_load_file(table, &o, &conf, path, &e), 0);
    assert_int_equal(o.port, 9000);
    assert_string_equal(o.name, "fooserver");
    assert_true(o.verbose);
    assert_int_equal(o.level, LOG_DEBUG);
    assert_string_equal(o.dir, "/var/lib/x"); /* empty path: unchanged */
    assert_int_equal(settings_check_required(table, &o, NULL, &e), 0);
    /* Flags win over the file: --name value, --name=value, -x value, -xvalue. */
    char *argv[] = {"prog", "--port", "9001", "--listen=10.0.0.2", "--once", "-c", path,
                    "--state-dir", "/srv", "rest", NULL};
    int argc = 10, i = 1;
    assert_string_equal(settings_find_flag(table, "config", argc, argv), path);
    assert_string_equal(settings_find_flag(table, "once", argc, argv), "true");
    assert_null(settings_find_flag(table, "verbose", argc, argv));
    assert_int_equal(settings_parse_flags(table, &o, argc, argv, &i, &e), 0);
    assert_int_equal(i, 9);
    assert_string_equal(argv[i], "rest");
    assert_int_equal(o.port, 9001);
    assert_string_equal(o.listen, "10.0.0.2");
    assert_true(o.once);
    assert_string_equal(o.config, path);
    assert_string_equal(o.dir, "/srv");
    char *argv2[] = {"prog", "-p9002", "-l", "10.0.0.3", NULL};
    i = 1;
    assert_int_equal(settings_parse_flags(table, &o, 4, argv2, &i, &e), 0);
    assert_int_equal(o.port, 9002);
    assert_string_equal(o.listen, "10.0.0.3");
    conf_free(&conf);
    unlink(path);
}

/* Load `text`; the error message, or "" when it loaded. */
static const char *load_error(const char *text, err_t *e)
{
    opts_t o = {0};
    conf_t conf;
    err_clear(e);
    write_conf(text);
    int rc = settings_load_file(table, &o, &conf, path, e);
    conf_free(&conf);
    unlink(path);
    return rc < 0 ? e->msg : "";
}

static void test_file_errors(void **state)
{
    (void)state;
    err_t e;
    char want[160];
    snprintf(want, sizeof want, ":2: unknown setting 'colour'");
    assert_non_null(strstr(load_error("port = 1\ncolour = blue\n", &e), want));
    /* A command-line-only row is no config key. */
    assert_non_null(strstr(load_error("once = true\n", &e), ":1: unknown setting 'once'"));
    assert_non_null(strstr(load_error("port = 0\n", &e),
                           ":1: port must be an integer from 1 to 65535, not '0'"));
    assert_non_null(strstr(load_error("port = 65536\n", &e), "from 1 to 65535"));
    assert_non_null(strstr(load_error("port = 12x\n", &e), "not '12x'"));
    assert_non_null(strstr(load_error("verbose = maybe\n", &e),
                           "verbose must be true or false"));
    assert_non_null(strstr(load_error("log_level = loud\n", &e),
                           "log_level must be error, warn, info or debug"));
    assert_non_null(strstr(load_error("state_dir = rel\n", &e),
                           "state_dir must be an absolute path"));
    assert_non_null(strstr(load_error("server_name = a:b\n", &e),
                           "server_name must not contain ':'"));
    assert_non_null(strstr(load_error("listen = 0123456789abcdef\n", &e),
                           "listen is too long"));
    assert_non_null(strstr(load_error("no equals sign\n", &e), "expected `key = value`"));
    assert_string_equal(load_error("port = 65535\n", &e), "");
}

static void test_flag_errors(void **state)
{
    (void)state;
    opts_t o = {0};
    err_t e = {0};
    char *unknown[] = {"prog", "--colour", "blue", NULL};
    int i = 1;
    assert_int_equal(settings_parse_flags(table, &o, 3, unknown, &i, &e), -1);
    assert_string_equal(e.msg, "unknown option '--colour'");
    /* A config-file-only row is no flag. */
    char *file_only[] = {"prog", "--verbose", NULL};
    i = 1;
    assert_int_equal(settings_parse_flags(table, &o, 2, file_only, &i, &e), -1);
    char *missing[] = {"prog", "--port", NULL};
    i = 1;
    assert_int_equal(settings_parse_flags(table, &o, 2, missing, &i, &e), -1);
    assert_string_equal(e.msg, "--port needs a value");
    char *bad[] = {"prog", "--port=x", NULL};
    i = 1;
    assert_int_equal(settings_parse_flags(table, &o, 2, bad, &i, &e), -1);
    assert_string_equal(e.msg, "--port: port must be an integer from 1 to 65535, not 'x'");
    /* "--" ends the flags. */
    char *dashes[] = {"prog", "--", "--port", NULL};
    i = 1;
    assert_int_equal(settings_parse_flags(table, &o, 3, dashes, &i, &e), 0);
    assert_int_equal(i, 2);
}

static void test_help_lists_every_setting(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    settings_help_flags(f, table);
    fputs("--\n", f);
    settings_help_keys(f, table);
    fclose(f);
    char *keys = strstr(text, "--\n");
    assert_non_null(keys);
    *keys = '\0';
    keys += 3;
    assert_non_null(strstr(text, "  -p, --port N"));
    assert_non_null(strstr(text, "TCP port (default 8080)"));
    assert_non_null(strstr(text, "--server-name"));
    assert_non_null(strstr(text, "(default 127.0.0.1)"));
    assert_non_null(strstr(text, "(default info)"));
    assert_non_null(strstr(text, "--once"));
    assert_null(strstr(text, "--verbose")); /* file only */
    assert_non_null(strstr(keys, "  port = N"));
    assert_non_null(strstr(keys, "verbose = VALUE"));
    assert_null(strstr(keys, "once")); /* command line only */
    for (const setting_t *s = table; s->name; s++)
        assert_true(strstr(text, s->help) || strstr(keys, s->help));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_then_flags),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_help_lists_every_setting),
    };
    return cmocka_run_group_tests_name("settings", tests, NULL, NULL);
}

/* schema.c - the database schema for the whole API contract, and its
 * migrations: imperium-api applies them at start, `imperium admin db
 * migrate` on demand (so it lives in src/common, which both link).
 *
 * Migrations are append-only: a released step is never edited, a change is a
 * new step.  The text is the portable subset: booleans are 0/1 integers,
 * times unix seconds, keys `id INTEGER PRIMARY KEY`; the PostgreSQL backend
 * rewrites the DDL (INTEGER -> BIGINT, the id an identity column). */
#include "schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A step is a script or, when it needs more than SQL text, a function.
 * Each runs in one transaction with foreign keys checked at its end
 * (db_schema_begin / db_schema_commit), so a step may rebuild tables. */
typedef struct {
    const char *sql;
    int (*run)(db_t *db, err_t *e);
} migration_t;

static int ids_only_grow(db_t *db, err_t *e);

static const migration_t migrations[] = {
    /* 1: everything API.md describes. */
    {"CREATE TABLE customers ("
    "  id INTEGER PRIMARY KEY,"
    "  username TEXT NOT NULL UNIQUE,"
    "  password_hash TEXT NOT NULL,"
    "  uuid TEXT NOT NULL UNIQUE,"
    "  company TEXT NOT NULL DEFAULT '',"
    "  vat TEXT NOT NULL DEFAULT '',"
    "  email TEXT NOT NULL DEFAULT '',"
    "  rsa_key TEXT NOT NULL,"      /* PEM private key: signs router subscriptions */
    "  rsa_pubkey TEXT NOT NULL,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE servers ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  address TEXT NOT NULL UNIQUE,"
    "  memory INTEGER NOT NULL,"
    "  storage INTEGER NOT NULL,"
    "  disk TEXT NOT NULL DEFAULT '',"
    "  owner_id INTEGER REFERENCES customers(id) ON DELETE SET NULL,"
    "  weight INTEGER NOT NULL DEFAULT 9999,"
    "  datacenter TEXT NOT NULL DEFAULT '',"
    "  etc_hosts TEXT NOT NULL DEFAULT '',"
    "  etc_resolv_conf TEXT NOT NULL DEFAULT '',"
    "  node_secret_hash TEXT,"         /* the node's channel credential */
    "  portmap_generation INTEGER NOT NULL DEFAULT 1,"
    "  note TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE distros ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  path TEXT NOT NULL);"
    "CREATE TABLE containers ("
    "  id INTEGER PRIMARY KEY,"
    "  customer_id INTEGER NOT NULL REFERENCES customers(id),"
    "  server_id INTEGER NOT NULL REFERENCES servers(id),"
    "  name TEXT NOT NULL,"
    "  note TEXT NOT NULL DEFAULT '',"
    "  memory INTEGER NOT NULL,"
    "  storage INTEGER NOT NULL,"
    "  distro_id INTEGER REFERENCES distros(id) ON DELETE SET NULL,"
    "  custom_distro_id INTEGER,"
    "  uuid TEXT NOT NULL UNIQUE,"
    "  secret_uuid TEXT NOT NULL,"
    "  quota_threshold INTEGER NOT NULL DEFAULT 90,"
    "  jid TEXT NOT NULL DEFAULT '',"
    "  jid_secret TEXT NOT NULL DEFAULT '',"
    "  jid_destinations TEXT NOT NULL DEFAULT '',"
    "  pushover_user TEXT NOT NULL DEFAULT '',"
    "  pushover_token TEXT NOT NULL DEFAULT '',"
    "  pushover_sound TEXT NOT NULL DEFAULT '',"
    "  pushbullet_token TEXT NOT NULL DEFAULT '',"
    "  slack_webhook TEXT NOT NULL DEFAULT '',"
    "  alarm_freq INTEGER NOT NULL DEFAULT 60,"
    "  nofollow INTEGER NOT NULL DEFAULT 0,"
    "  custom_distros_storage INTEGER NOT NULL DEFAULT 0,"
    "  alarm_key TEXT,"
    "  max_alarms INTEGER NOT NULL DEFAULT 100,"
    /* generation: bumped by every change that must restart the container;
     * ssh_generation: bumped when only its authorized keys change. */
    "  generation INTEGER NOT NULL DEFAULT 1,"
    "  ssh_generation INTEGER NOT NULL DEFAULT 1,"
    "  created INTEGER NOT NULL);"
    "CREATE INDEX containers_customer ON containers(customer_id);"
    "CREATE INDEX containers_server ON containers(server_id);"
    "CREATE TABLE ssh_keys ("
    "  container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  pos INTEGER NOT NULL,"
    "  key TEXT NOT NULL,"
    "  PRIMARY KEY (container_id, pos));"
    "CREATE TABLE links ("
    "  container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  to_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (container_id, to_id));"
    "CREATE TABLE tags ("
    "  id INTEGER PRIMARY KEY,"
    "  customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  note TEXT NOT NULL DEFAULT '',"
    "  UNIQUE (customer_id, name));"
    "CREATE TABLE container_tags ("
    "  container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  tag_id INTEGER NOT NULL REFERENCES tags(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (container_id, tag_id));"
    "CREATE TABLE domains ("
    "  id INTEGER PRIMARY KEY,"
    "  customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL UNIQUE,"
    "  uuid TEXT NOT NULL UNIQUE,"
    "  note TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL);"
    "CREATE INDEX domains_customer ON domains(customer_id);"
    "CREATE TABLE domain_tags ("
    "  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,"
    "  tag_id INTEGER NOT NULL REFERENCES tags(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (domain_id, tag_id));"
    "CREATE TABLE loopboxes ("
    "  id INTEGER PRIMARY KEY,"
    "  container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  filename TEXT NOT NULL,"
    "  mountpoint TEXT NOT NULL,"
    "  ro INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (container_id, filename),"
    "  UNIQUE (container_id, mountpoint));"
    "CREATE TABLE loopbox_tags ("
    "  loopbox_id INTEGER NOT NULL REFERENCES loopboxes(id) ON DELETE CASCADE,"
    "  tag_id INTEGER NOT NULL REFERENCES tags(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (loopbox_id, tag_id));"
    "CREATE TABLE alarms ("
    "  id INTEGER PRIMARY KEY,"
    "  container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  level INTEGER NOT NULL,"
    "  color TEXT NOT NULL DEFAULT '',"
    "  class TEXT NOT NULL DEFAULT '',"
    "  vassal TEXT NOT NULL DEFAULT '',"
    "  line INTEGER,"
    "  filename TEXT NOT NULL DEFAULT '',"
    "  func TEXT NOT NULL DEFAULT '',"
    "  unix INTEGER NOT NULL,"
    "  msg TEXT NOT NULL);"
    "CREATE INDEX alarms_container ON alarms(container_id, id);"
    "CREATE TABLE portmappings ("
    "  id INTEGER PRIMARY KEY,"
    "  server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,"
    "  container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  proto TEXT NOT NULL,"
    "  public_port INTEGER NOT NULL,"
    "  private_port INTEGER NOT NULL,"
    "  UNIQUE (server_id, proto, public_port));"
    "CREATE TABLE custom_distros ("
    "  id INTEGER PRIMARY KEY,"
    "  container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  path TEXT NOT NULL,"
    "  note TEXT NOT NULL DEFAULT '',"
    "  uuid TEXT NOT NULL UNIQUE);"
    "CREATE TABLE container_metrics ("
    "  container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
    "  metric TEXT NOT NULL,"
    "  unix INTEGER NOT NULL,"
    "  value INTEGER NOT NULL);"
    "CREATE INDEX container_metrics_idx ON container_metrics(container_id, metric, unix);"
    "CREATE TABLE domain_metrics ("
    "  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,"
    "  container_id INTEGER REFERENCES containers(id) ON DELETE CASCADE,"
    "  metric TEXT NOT NULL,"
    "  unix INTEGER NOT NULL,"
    "  value INTEGER NOT NULL);"
    "CREATE INDEX domain_metrics_idx ON domain_metrics(domain_id, metric, unix);"
    "CREATE TABLE news ("
    "  id INTEGER PRIMARY KEY,"
    "  content TEXT NOT NULL,"
    "  public INTEGER NOT NULL DEFAULT 0,"
    "  date INTEGER NOT NULL);"
    "CREATE TABLE legions ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  address TEXT NOT NULL,"
    "  key TEXT NOT NULL DEFAULT '',"
    "  quorum INTEGER NOT NULL DEFAULT 1,"
    "  note TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE legion_nodes ("
    "  legion_id INTEGER NOT NULL REFERENCES legions(id) ON DELETE CASCADE,"
    "  server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (legion_id, server_id));"
    /* The node's report of what it runs (the public platform never showed it). */
    "CREATE TABLE container_status ("
    "  container_id INTEGER PRIMARY KEY REFERENCES containers(id) ON DELETE CASCADE,"
    "  state TEXT NOT NULL,"
    "  since INTEGER NOT NULL,"
    "  restarts INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  generation INTEGER NOT NULL DEFAULT 0);", NULL},
    /* 2: ids only ever grow; why a container stopped; the purge of deleted homes. */
    {NULL, ids_only_grow},
    /* 3: alarms the nodes raise (issue 16) carry the node's own id for them,
     * so a batch resent after a lost answer stores nothing twice.  NULL for
     * the alarms raised with the API (the ones sent down to the nodes). */
    {"ALTER TABLE alarms ADD COLUMN node_ref TEXT;"
     "CREATE UNIQUE INDEX alarms_node_ref ON alarms(container_id, node_ref);", NULL},
    /* 4: the newest id of the alarms raised with the API for a server's
     * containers (the node state's alarm_seq), kept by alarm_store_in:
     * every node's state is rebuilt on each raise, and a column is read
     * at once where a MAX over the server's alarms was not. */
    {"ALTER TABLE servers ADD COLUMN alarm_seq INTEGER NOT NULL DEFAULT 0;"
     "UPDATE servers SET alarm_seq = (SELECT COALESCE(MAX(a.id), 0) FROM alarms a "
     "JOIN containers c ON c.id = a.container_id WHERE c.server_id = servers.id "
     "AND a.node_ref IS NULL);", NULL},
};

/* Every table with an `id INTEGER PRIMARY KEY`.  Ids travel to the nodes
 * (a container's uid is 30000 + id and names its home there; custom
 * distros, loopboxes, port mappings, domains, tags) and to customers:
 * SQLite hands out max(id)+1, so deleting the newest row gave its id, and
 * with a uid the old home and its data, to the next customer. */
const char *const schema_id_tables[] = {
    "customers", "servers", "distros", "containers", "tags", "domains", "loopboxes",
    "alarms", "portmappings", "custom_distros", "news", "legions", NULL,
};

/* Every table of the schema but schema_version, each after the tables its
 * foreign keys name (test_schema.c checks both). */
const char *const schema_copy_order[] = {
    "customers", "servers", "distros", "containers", "ssh_keys", "links", "tags",
    "container_tags", "domains", "domain_tags", "loopboxes", "loopbox_tags", "alarms",
    "portmappings", "custom_distros", "container_metrics", "domain_metrics", "news",
    "legions", "legion_nodes", "container_status", NULL,
};

static int ids_only_grow(db_t *db, err_t *e)
{
    for (const char *const *t = schema_id_tables; *t; t++)
        if (db_ids_never_reused(db, e, *t) < 0)
            return -1;
    return db_exec_script(
        db, e,
        /* Why the API stopped a container (a custom distro deleted under
         * it): shown as status.last_error until a distro is set again. */
        "ALTER TABLE containers ADD COLUMN stopped_reason TEXT;"
        /* Homes of containers deleted before this time may be purged. */
        "ALTER TABLE servers ADD COLUMN purge_deleted_before INTEGER NOT NULL DEFAULT 0;"
        /* Deleting a storage container left its custom distros' ids on the
         * containers booting them: such an id, reused, would have booted
         * whoever's custom distro took it next. */
        "UPDATE containers SET stopped_reason = 'stopped: custom distro ' || "
        "custom_distro_id || ' was deleted', custom_distro_id = NULL, "
        "generation = generation + 1 WHERE custom_distro_id IS NOT NULL AND "
        "custom_distro_id NOT IN (SELECT id FROM custom_distros);");
}

int schema_latest_version(void) { return (int)(sizeof migrations / sizeof migrations[0]); }

/* Inside a schema transaction: the version as the database has it now
 * (another process may have just moved it), 0 for a new database.  The
 * table is made here, under the same lock, so two processes starting on an
 * empty database cannot both create it.  A script: the PostgreSQL backend
 * rewrites DDL only there. */
static long long locked_version(db_t *db, err_t *e)
{
    if (db_exec_script(db, e,
                       "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)") < 0)
        return -1;
    return db_scalar_int(db, e, 0, "SELECT MAX(version) FROM schema_version", DB_NOARGS);
}

int schema_version(db_t *db, err_t *e)
{
    if (db_schema_begin(db, e) < 0)
        return -1;
    long long have = locked_version(db, e);
    db_schema_rollback(db); /* read only: not even the table is kept */
    return (int)have;
}

/* e's message prefixed with "schema migration V failed: ". */
static int step_failed(err_t *e, int v)
{
    char msg[sizeof e->msg];
    snprintf(msg, sizeof msg, "%s", e ? e->msg : "");
    return err_set(e, ERR_INTERNAL, "schema migration %d failed: %s", v, msg);
}

/* One step, in one transaction that holds the schema lock (SQLite: the
 * write lock; PostgreSQL: the advisory lock) from the version read to the
 * commit: 1 when a step ran, 0 when the database is already at `target`
 * or past it, -1 with e. */
static int migrate_step(db_t *db, err_t *e, int target)
{
    if (db_schema_begin(db, e) < 0)
        return -1;
    long long have = locked_version(db, e);
    if (have < 0 || have > schema_latest_version() || have >= target) {
        db_schema_rollback(db);
        if (have > schema_latest_version())
            return err_set(e, ERR_INTERNAL,
                           "database schema version %lld is newer than this binary (%d)", have,
                           schema_latest_version());
        return have < 0 ? -1 : 0;
    }
    int v = (int)have + 1;
    const migration_t *m = &migrations[v - 1];
    if ((m->sql ? db_exec_script(db, e, m->sql) : m->run(db, e)) < 0 ||
        db_exec(db, e, "INSERT INTO schema_version (version) VALUES ($1)", DB_ARGS(DB_INT(v))) <
            0) {
        db_schema_rollback(db);
        return step_failed(e, v);
    }
    if (db_schema_commit(db, e) < 0) /* rolls back when it fails */
        return step_failed(e, v);
    return 1;
}

int schema_migrate(db_t *db, err_t *e)
{
    return schema_migrate_to(db, e, schema_latest_version());
}

int schema_migrate_to(db_t *db, err_t *e, int target)
{
    if (target > schema_latest_version())
        target = schema_latest_version();
    /* At most one step per migration: each loop either runs one or ends. */
    for (int i = 0; i <= schema_latest_version(); i++) {
        int rc = migrate_step(db, e, target);
        if (rc <= 0)
            return rc;
    }
    return 0;
}

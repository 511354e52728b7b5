# demo-api.sh - sourced by scripts/run.sh and scripts/cluster.sh: the one
# place the demos' imperium-api settings are written (docs/OPERATING.md
# describes each setting).

# write_api_conf FILE LISTEN PORT RUN_DIR WRITER [DATABASE]: the admin token in
# RUN_DIR, and DATABASE (a URL) or else an SQLite database in RUN_DIR; WRITER
# names the script in the file's first line.  Instances sharing one database
# get the same RUN_DIR, hence the same admin token file.
write_api_conf() {
    cat >"$1" <<CONF
# imperium-api settings for a demo (written by $5)
listen = $2
port = $3
database = ${6:-sqlite:$4/imperium.db}
prefix = /api
admin_prefix = /admin
admin_token_file = $4/admin.token
log_level = info
CONF
}

-- throw-away prosody for tests (DIR = the test's temp dir, owned by prosody): loopback only, no TLS
daemonize = false
pidfile = "DIR/prosody.pid"
data_path = "DIR/data"
log = { info = "DIR/prosody.log"; error = "DIR/prosody.err" }
interfaces = { "127.0.0.1" }
c2s_ports = { 15222 }
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }
admin_address = nil
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "posix" }
modules_disabled = { "s2s"; "tls"; "admin_shell" }
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
VirtualHost "imperium.test"

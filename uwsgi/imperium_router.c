/* imperium_router.c - what Imperium adds to uWSGI 2.0's http router
 * (imperium_router.h, docs/ROUTER.md).
 *
 * Everything new lives here; uwsgi/patches/ only call in.  Compiled twice:
 * into the corerouter plugin (IMPERIUM_COREROUTER: subscriptions) and into
 * the http plugin (requests).  Both run in the router's unprivileged
 * processes, one event loop each: nothing here blocks but the read of a
 * small local challenge file. */

#ifdef IMPERIUM_COREROUTER
#include <uwsgi.h>
#include "cr.h"
#else
#include "common.h"
#endif

#include "imperium_router.h"

extern struct uwsgi_server uwsgi;

#ifdef IMPERIUM_COREROUTER

/* ---- renewal of a name's TLS context ---------------------------------------------
 *
 * uWSGI makes a name's SNI context from the first packet carrying sni_key
 * and sni_crt and never looks at the files again.  The node's gate writes a
 * renewed certificate as a new file (rename), so the packets that keep
 * coming every few seconds name files whose identity changed: then the
 * context is made again and replaces the old one.  OpenSSL counts the
 * references to a context, so connections already open keep the old one. */

#define SIG_FILES 3
#define SIG_BUCKETS 1024
/* at most one new context per name in this time: two vassals naming one
 * name's files, or files rewritten all the time, would otherwise make the
 * router load certificates on every packet */
#define RENEW_INTERVAL 10

/* An SNI item this file has seen (custom is 1 when uWSGI adds one from a
 * packet: uwsgi_ssl_del_sni_item() takes any non-zero). */
#define ITEM_SEEN 2

struct file_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct sni_record {
	struct sni_record *next;
	/* the key, certificate and CA ("!" and all) the name's context is
	 * made from, as the packet named them (NULL: none) */
	char *path[SIG_FILES];
	struct file_sig sig[SIG_FILES];
	time_t renewed;
	int warned;
	char name[];
};

/* Per process (each http process holds contexts of its own); a record is
 * kept for every name that ever had a context: a few hundred bytes each. */
static struct sni_record *records[SIG_BUCKETS];

static int file_sig_of(const char *path, struct file_sig *s) {
	memset(s, 0, sizeof *s);
	if (!path) return 0;
	if (path[0] == '!') path++; /* a mandatory CA */
	struct stat st;
	if (stat(path, &st) < 0) return -1;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->size = st.st_size;
	s->mtime = st.st_mtim;
	return 0;
}

static int same_sig(const struct file_sig *a, const struct file_sig *b) {
	for (int i = 0; i < SIG_FILES; i++) {
		if (a[i].dev != b[i].dev || a[i].ino != b[i].ino || a[i].size != b[i].size ||
		    a[i].mtime.tv_sec != b[i].mtime.tv_sec || a[i].mtime.tv_nsec != b[i].mtime.tv_nsec)
			return 0;
	}
	return 1;
}

static int same_paths(char *const *a, char *const *b) {
	for (int i = 0; i < SIG_FILES; i++) {
		if (!a[i] != !b[i] || (a[i] && strcmp(a[i], b[i]))) return 0;
	}
	return 1;
}

static struct sni_record **record_slot(const char *name) {
	uint32_t h = djb33x_hash((char *) name, strlen(name));
	struct sni_record **r = &records[h % SIG_BUCKETS];
	while (*r && strcmp((*r)->name, name))
		r = &(*r)->next;
	return r;
}

/* The dynamic (subscription-made) SNI items for name: how many, and the
 * newest (the last). */
static int sni_items(const char *name, struct uwsgi_string_list **newest) {
	int n = 0;
	struct uwsgi_string_list *usl;
	*newest = NULL;
	uwsgi_foreach(usl, uwsgi.sni) {
		if (usl->custom && !uwsgi_strncmp(usl->value, usl->len, (char *) name, strlen(name))) {
			n++;
			*newest = usl;
		}
	}
	return n;
}

/* uWSGI forgets to destroy a name's context when its slot goes away and
 * shares a hash bucket with another; a new slot for the name then appends a
 * second context behind the stale one, which lookups find first.  Keep only
 * the newest (the last; uwsgi_ssl_del_sni_item() deletes the first).
 * Returns it, or NULL. */
static struct uwsgi_string_list *keep_newest(const char *name) {
	struct uwsgi_string_list *newest;
	for (int n = sni_items(name, &newest); n > 1; n--)
		uwsgi_ssl_del_sni_item((char *) name, strlen(name));
	return newest;
}

static char *field(char *s, uint16_t len) {
	return len ? uwsgi_concat2n(s, len, "", 0) : NULL;
}

static void free_paths(char **path) {
	for (int i = 0; i < SIG_FILES; i++) {
		free(path[i]);
		path[i] = NULL;
	}
}

/* The context uWSGI just made from this packet's files (an item it added
 * and this file has not seen): they are the name's files from now on. */
static void adopt(struct sni_record **slot_r, const char *name, char **path, const struct file_sig *sig,
		  struct uwsgi_string_list *item) {
	struct sni_record *r = *slot_r;
	if (!r) {
		r = uwsgi_calloc(sizeof *r + strlen(name) + 1);
		strcpy(r->name, name);
		*slot_r = r;
	}
	free_paths(r->path);
	for (int i = 0; i < SIG_FILES; i++)
		r->path[i] = path[i] ? uwsgi_str(path[i]) : NULL;
	memcpy(r->sig, sig, sizeof r->sig);
	r->renewed = 0;
	r->warned = 0;
	item->custom = ITEM_SEEN;
}

static void renew(const char *name, const char *key, const char *crt, const char *ca_arg, struct sni_record *r,
		  const struct file_sig *sig) {
	/* Made before the old one goes: a failure keeps serving the old one,
	 * and the record stays old so a later packet tries again. */
	r->renewed = uwsgi_now();
	SSL_CTX *ctx = uwsgi_ssl_new_server_context((char *) name, (char *) crt, (char *) key, uwsgi.sni_dir_ciphers,
						    (char *) ca_arg);
	if (!ctx) {
		uwsgi_log("[imperium] %s: the renewed certificate %s could not be loaded; still serving the previous one\n",
			  name, crt);
		return;
	}
	struct uwsgi_string_list *newest;
	for (int n = sni_items(name, &newest); n > 0; n--)
		uwsgi_ssl_del_sni_item((char *) name, strlen(name));
	struct uwsgi_string_list *usl = uwsgi_string_new_list(&uwsgi.sni, uwsgi_str((char *) name));
	usl->custom_ptr = ctx;
	usl->custom = ITEM_SEEN;
	memcpy(r->sig, sig, sizeof r->sig);
	uwsgi_log("[imperium pid %d] %s: certificate files changed, new TLS context from %s\n", (int) getpid(), name, crt);
}

/* The packet names files (path: key, crt, [!]ca) for name. */
static void check_files(const char *name, char **path) {
	struct uwsgi_string_list *item = keep_newest(name);
	if (!item) return;
	struct file_sig sig[SIG_FILES];
	int missing = 0;
	for (int i = 0; i < SIG_FILES; i++)
		missing |= file_sig_of(path[i], &sig[i]) < 0;
	struct sni_record **slot_r = record_slot(name);
	if (!*slot_r || item->custom != ITEM_SEEN) {
		adopt(slot_r, name, path, sig, item);
		return;
	}
	struct sni_record *r = *slot_r;
	if (!same_paths(r->path, path)) {
		/* another vassal's (or a forged) idea of the name's files: the
		 * context stays the one made from the first ones */
		if (!r->warned)
			uwsgi_log("[imperium] %s: a subscription names other certificate files (%s) than its TLS context's "
				  "(%s); ignored\n", name, path[1], r->path[1]);
		r->warned = 1;
		return;
	}
	if (missing) return; /* a file went away: keep what is loaded */
	if (same_sig(r->sig, sig) || uwsgi_now() - r->renewed < RENEW_INTERVAL) return;
	renew(name, path[0], path[1], path[2], r, sig);
}

struct uwsgi_subscribe_node *imperium_cr_subscribed(struct uwsgi_corerouter *ucr, struct uwsgi_subscribe_req *usr,
						    struct uwsgi_subscribe_node *node) {
	(void) ucr;
	if (!node || !node->slot || !node->slot->sni_enabled || !usr->sni_key_len || !usr->sni_crt_len) return node;
	struct uwsgi_subscribe_slot *slot = node->slot;
	char *colon = memchr(slot->key, ':', slot->keylen);
	char *name = uwsgi_concat2n(slot->key, colon ? (int) (colon - slot->key) : (int) slot->keylen, "", 0);
	char *path[SIG_FILES] = {field(usr->sni_key, usr->sni_key_len), field(usr->sni_crt, usr->sni_crt_len),
				 field(usr->sni_ca, usr->sni_ca_len)};
	check_files(name, path);
	free(name);
	free_paths(path);
	return node;
}

void imperium_cr_signed_base(struct uwsgi_subscribe_req *usr, char *packet, ssize_t len) {
	/* as uwsgi_corerouter_manage_subscription() does for a packet it receives */
	if (usr->sign_len > 0 && len > (ssize_t) (4 + 2 + 4 + 2 + usr->sign_len)) {
		usr->base = packet + 4;
		usr->base_len = len - 4 - (2 + 4 + 2 + usr->sign_len);
	}
}

int imperium_cr_stats_server(struct uwsgi_corerouter *ucr, int id, int first) {
	if (first || !ucr->stats_server || strchr(ucr->stats_server, ':')) return 0;
	int n = 0;
	for (int i = 0; i < id; i++) {
		if (!strcmp(ushared->gateways[i].name, ucr->name)) n++;
	}
	char num[16];
	snprintf(num, sizeof num, ".%d", n);
	ucr->stats_server = uwsgi_concat2(ucr->stats_server, num);
	return 1;
}

#else /* the http plugin */

extern struct uwsgi_http uhttp;
/* corerouter.c's, not in cr.h */
int uwsgi_cr_peer_del(struct corerouter_peer *);

char *imperium_acme_dir = NULL;

#define ACME_PREFIX "/.well-known/acme-challenge/"
#define ACME_TOKEN_MAX 128
#define ACME_FILE_MAX 4096

/* ---- answers of the router's own ---------------------------------------------------- */

/* Writes a whole response to the client in place of a backend's: the
 * backend peer (never connected) goes, and the connection stays open for
 * the next request when the client allows it and sent no body. */
static int reply(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer, const char *status,
		 const char *type, const char *body, size_t body_len) {
	struct corerouter_session *cs = main_peer->session;
	struct http_session *hr = (struct http_session *) cs;
	int keep = cs->can_keepalive && hr->content_length == 0 && hr->remains == 0 && !hr->raw_body;
	/* an answer to HEAD has the headers only: a body would be read as the
	 * next answer on a kept-alive connection */
	int head = main_peer->in->pos >= 5 && !memcmp(main_peer->in->buf, "HEAD ", 5);

	if (!hr->imperium_reply) {
		hr->imperium_reply = uwsgi_buffer_new(512);
		if (!hr->imperium_reply) return -1;
	}
	struct uwsgi_buffer *ub = hr->imperium_reply;
	ub->pos = 0;
	char len[32];
	int n = snprintf(len, sizeof len, "%lu", (unsigned long) body_len);
	if (n <= 0 || n >= (int) sizeof len) return -1;
	if (uwsgi_buffer_append(ub, "HTTP/1.1 ", 9) || uwsgi_buffer_append(ub, (char *) status, strlen(status)) ||
	    uwsgi_buffer_append(ub, "\r\nContent-Type: ", 16) || uwsgi_buffer_append(ub, (char *) type, strlen(type)) ||
	    uwsgi_buffer_append(ub, "\r\nContent-Length: ", 18) || uwsgi_buffer_append(ub, len, n) ||
	    uwsgi_buffer_append(ub, keep ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n",
				keep ? 28 : 23) ||
	    (!head && uwsgi_buffer_append(ub, (char *) body, body_len)))
		return -1;

	/* a peer the subscription lookup gave a node holds a reference on it
	 * (uwsgi_get_subscribe_node() counted it), which a peer that never
	 * connected must give back itself */
	if (new_peer->un && new_peer->un->len) new_peer->un->reference--;
	new_peer->un = NULL;
	if (uwsgi_cr_peer_del(new_peer) < 0) return -1;
	/* the request is consumed: the next one starts at the buffer's head */
	main_peer->in->pos = 0;
	hr->rnrn = 0;
	main_peer->disabled = 0;
	if (!keep) {
		cs->can_keepalive = 0;
		cs->wait_full_write = 1;
	}
	else if (uhttp.keepalive > 1 && main_peer->current_timeout != uhttp.keepalive) {
		main_peer->current_timeout = uhttp.keepalive;
		main_peer->timeout = corerouter_reset_timeout(cs->corerouter, main_peer);
	}
	main_peer->out = ub;
	main_peer->out_pos = 0;
	cr_write_to_main(main_peer, hr->func_write);
	return 1;
}

static const char not_found_body[] =
	"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
	"<p>No site is served under this name here.</p></body></html>\n";

static const char misdirected_body[] =
	"<html><head><title>421 Misdirected Request</title></head><body><h1>Misdirected Request</h1>"
	"<p>The Host of this request is not the name the TLS connection was opened for.</p></body></html>\n";

int imperium_http_not_found(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer) {
	return reply(main_peer, new_peer, "404 Not Found", "text/html", not_found_body, sizeof not_found_body - 1);
}

void imperium_http_session_close(struct http_session *hr) {
	if (hr->imperium_reply) {
		uwsgi_buffer_destroy(hr->imperium_reply);
		hr->imperium_reply = NULL;
	}
}

/* ---- the Host -------------------------------------------------------------------------- */

/* The routing key is the Host without its port, in lower case: curl and
 * browsers send "name:8443" off the default port, and DNS names are
 * case-insensitive (the SNI lookup below is too, so both agree). */
static void normalise_key(struct corerouter_peer *peer) {
	size_t len = peer->key_len, i = len;
	while (i > 0 && isdigit((unsigned char) peer->key[i - 1])) i--;
	if (i > 0 && i < len && peer->key[i - 1] == ':') {
		/* "[::1]:80" or "name:80", never the inside of "[::1]" */
		size_t colons = 0;
		for (size_t j = 0; j < i - 1; j++) colons += peer->key[j] == ':';
		if (colons == 0 || peer->key[i - 2] == ']') len = i - 1;
	}
	for (i = 0; i < len; i++) peer->key[i] = tolower((unsigned char) peer->key[i]);
	peer->key_len = len;
}

/* ---- ACME HTTP-01 --------------------------------------------------------------------- */

static int acme_token(const char *s, size_t len) {
	if (len < 1 || len > ACME_TOKEN_MAX) return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!isalnum((unsigned char) c) && c != '_' && c != '-') return 0;
	}
	return 1;
}

/* 1: answered with the challenge file; 0: not a challenge we hold. */
static int acme_challenge(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer) {
	struct http_session *hr = (struct http_session *) main_peer->session;
	size_t plen = sizeof ACME_PREFIX - 1;
	if (!imperium_acme_dir || main_peer->in->pos < 4 || memcmp(main_peer->in->buf, "GET ", 4) ||
	    hr->request_uri_len <= plen || memcmp(hr->request_uri, ACME_PREFIX, plen))
		return 0;
	const char *token = hr->request_uri + plen;
	size_t tlen = hr->request_uri_len - plen;
	if (!acme_token(token, tlen)) return 0;
	char path[PATH_MAX];
	int n = snprintf(path, sizeof path, "%s/%.*s", imperium_acme_dir, (int) tlen, token);
	if (n <= 0 || n >= (int) sizeof path) return 0;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) return 0;
	char body[ACME_FILE_MAX];
	struct stat st;
	ssize_t got = -1;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= ACME_FILE_MAX) got = read(fd, body, sizeof body);
	close(fd);
	if (got < 0) return 0;
	return reply(main_peer, new_peer, "200 OK", "text/plain", body, (size_t) got);
}

/* ---- HTTPS: SNI ---------------------------------------------------------------------------- */

#ifdef UWSGI_SSL

/* The SNI item for name[0..len): exact, then (with --subscription-dotsplit)
 * its wildcards .b.example.org, .example.org, at most 5 steps, like the
 * subscription lookup.  Case-insensitive: "PROTECTED.test" must not miss
 * protected.test's context (and its client-certificate rule) while its
 * Host still matches. */
static struct uwsgi_string_list *sni_item(const char *name, size_t len) {
	for (int count = 5; count > 0; count--) {
		struct uwsgi_string_list *usl;
		uwsgi_foreach(usl, uwsgi.sni) {
			if (usl->len == len && !strncasecmp(usl->value, name, len)) return usl;
		}
		if (!uwsgi.subscription_dotsplit || len < 2) break;
		const char *next = memchr(name + 1, '.', len - 1);
		if (!next) break;
		len -= next - name;
		name = next;
	}
	return NULL;
}

/* ---- a connection's binding to the item that chose its context ----------------------
 *
 * The SSL object keeps a copy of the name of the SNI item whose context the
 * handshake switched to ("protected.test", ".w.test"), none for the default
 * context.  A request is routed only to a subscription whose own item has
 * that name: the Host == SNI check alone trusts SSL_get_servername(), which
 * a TLS 1.3 client can change in its second ClientHello after a
 * HelloRetryRequest (OpenSSL then runs the callback of the context already
 * chosen, not ours), and an item left behind by uWSGI when a slot went
 * keeps a name whose requests the wildcard's vassal would answer. */

static int bound_index = -1;

static void bound_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
	(void) parent;
	(void) ad;
	(void) idx;
	(void) argl;
	(void) argp;
	free(ptr);
}

/* 0, or -1 when no memory (the handshake fails). */
static int bind_item(SSL *ssl, const struct uwsgi_string_list *usl) {
	char *name = NULL;
	if (usl) {
		name = strndup(usl->value, usl->len);
		if (!name) return -1;
	}
	char *old = SSL_get_ex_data(ssl, bound_index);
	if (!SSL_set_ex_data(ssl, bound_index, name)) {
		free(name);
		return -1;
	}
	free(old);
	return 0;
}

/* Runs for every handshake on the default context (OpenSSL calls the
 * callback of the context the connection started with).  No resumption:
 * a session resumed under another name would carry a client certificate
 * checked by that name's CA. */
static int imperium_sni(SSL *ssl, int *ad, void *arg) {
	(void) arg;
	SSL_set_options(ssl, SSL_OP_NO_TICKET);
	SSL_set_num_tickets(ssl, 0);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	struct uwsgi_string_list *usl = name && strlen(name) <= 0xff ? sni_item(name, strlen(name)) : NULL;
	if (bind_item(ssl, usl) < 0) {
		*ad = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	if (!usl) return SSL_TLSEXT_ERR_NOACK; /* the default certificate; requests get 421 */
	SSL_CTX *ctx = (SSL_CTX *) usl->custom_ptr;
	SSL_set_SSL_CTX(ssl, ctx);
	/* as nginx and uWSGI's own callback: the verify rules are the SSL's */
	SSL_set_verify(ssl, SSL_CTX_get_verify_mode(ctx), SSL_CTX_get_verify_callback(ctx));
	SSL_set_verify_depth(ssl, SSL_CTX_get_verify_depth(ctx));
	SSL_clear_options(ssl, SSL_get_options(ssl) & ~SSL_CTX_get_options(ctx));
	SSL_set_options(ssl, SSL_CTX_get_options(ctx) | SSL_OP_NO_TICKET);
	return SSL_TLSEXT_ERR_OK;
}

void imperium_https_context(SSL_CTX *ctx) {
	if (bound_index < 0) {
		bound_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, bound_free);
		if (bound_index < 0) {
			uwsgi_log("[imperium] no SSL ex_data index for the connections' SNI binding\n");
			exit(1);
		}
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, imperium_sni);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* uWSGI's context allows P-256 only (SSL_CTX_set_tmp_ecdh), while
	 * curl, browsers and wrk open with an X25519 key share: every new
	 * connection then costs a HelloRetryRequest round trip.  The groups of
	 * the connection come from this first context (the SNI switch does
	 * not change them), so offering the usual list here is enough. */
	if (!SSL_CTX_set1_groups_list(ctx, "X25519:P-256:X448:P-384:P-521"))
		uwsgi_log("[imperium] could not set the TLS key exchange groups; P-256 only\n");
}

static int answer_misdirected(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer) {
	return reply(main_peer, new_peer, "421 Misdirected Request", "text/html", misdirected_body,
		     sizeof misdirected_body - 1);
}

/* 421 unless the Host is the SNI name the connection was opened with. */
static int misdirected(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer) {
	struct http_session *hr = (struct http_session *) main_peer->session;
	const char *sni = SSL_get_servername(hr->ssl, TLSEXT_NAMETYPE_host_name);
	if (sni && strlen(sni) == new_peer->key_len && !strncasecmp(sni, new_peer->key, new_peer->key_len)) return 0;
	return answer_misdirected(main_peer, new_peer);
}

/* 421 unless the item the routed subscription's name finds is the one
 * the connection's context came from (none for both is the same). */
static int unbound(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer) {
	struct http_session *hr = (struct http_session *) main_peer->session;
	const char *bound = SSL_get_ex_data(hr->ssl, bound_index);
	struct uwsgi_subscribe_node *un = new_peer->un;
	if (!un || !un->len || !un->slot) return answer_misdirected(main_peer, new_peer); /* not a subscription */
	const char *key = un->slot->key;
	const char *colon = memchr(key, ':', un->slot->keylen);
	struct uwsgi_string_list *usl = sni_item(key, colon ? (size_t) (colon - key) : un->slot->keylen);
	if (!usl && !bound) return 0;
	if (usl && bound && strlen(bound) == usl->len && !strncasecmp(bound, usl->value, usl->len)) return 0;
	return answer_misdirected(main_peer, new_peer);
}

#endif

int imperium_http_routed(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer) {
#ifdef UWSGI_SSL
	if (main_peer->session->ugs->mode == UWSGI_HTTP_SSL) return unbound(main_peer, new_peer);
#endif
	(void) main_peer;
	(void) new_peer;
	return 0;
}

int imperium_http_request(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer) {
	normalise_key(new_peer);
#ifdef UWSGI_SSL
	if (main_peer->session->ugs->mode == UWSGI_HTTP_SSL) return misdirected(main_peer, new_peer);
#endif
	return acme_challenge(main_peer, new_peer);
}

#endif

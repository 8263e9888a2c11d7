/*
 * The connection between two hosts' guest processes, as it opens: TLS
 * (default) or plain TCP (--insecure on both ends), then the hello that
 * names the guest, then, with a peer key, the HMAC challenge both ways.
 * Run by the guest processes themselves, since a TLS session cannot be
 * handed from one process to another.
 */
#ifndef PEER_H
#define PEER_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "peer_auth.h"
#include "transport.h"

struct peer_config {
	bool insecure;			/* plain TCP, logged as such */
	char tls_dir[400];		/* ca.crt, cert.pem, key.pem */
	char allow[400];		/* clients let in: comma-separated names, "" = any */
	struct peer_key key;
	int io_timeout_ms;
	int handshake_timeout_ms;
	/* Where a receiving guest offers its data channels: the first free
	 * port of [lo, hi], for firewalls; 0 = any free port. */
	uint16_t data_port_lo, data_port_hi;
};

/* "LO-HI" or "PORT" into a range of ports; -EINVAL when it is not one. */
int peer_parse_port_range(const char *s, uint16_t *lo, uint16_t *hi);

/* The configuration travels with each migrate request to the guest
 * process (over its root-only socket), so a guest started long ago uses
 * what the service uses now. */
struct json_object *peer_config_to_json(const struct peer_config *pc);
/* -EINVAL for a key that is not 16-64 bytes of hex. */
int peer_config_from_json(struct json_object *o, struct peer_config *pc);

/* Check the configuration once, at service start (files, key, contexts). */
int peer_config_check(const struct peer_config *pc, char *err, size_t errlen);

#define PEER_DEFAULT_PORT	"7480"
#define PEER_MAX_DATA		16

/* Data channels when a migration names none: one a core, to four, so
 * that compression and TLS of the pages spread over the cores. */
unsigned peer_default_channels(void);
#define PEER_LINEAGE_LEN	32

/* Dial another host's service (HOST[:PORT]); the guest process secures
 * the connection (peer_dial). Returns the socket, or -errno with err;
 * host gets the HOST part. */
int peer_connect(const char *dest, int io_timeout_ms, char *host, size_t hostlen,
		 char *err, size_t errlen);

/* The channels of one migration: ordered control plus parallel data. */
struct peer_session {
	struct xport *control;
	struct xport *data[PEER_MAX_DATA];
	unsigned nr_data;
	int data_port;			/* where they came in */
	unsigned peer_minor;		/* source: the highest minor of the record
					 * format the destination reads (0: it did
					 * not say, an earlier version: 1.0) */
	char token[65];			/* what proves a connection part of it */
	int listen_fd;			/* destination, post-copy: kept for a recovery */
	bool has_listener;
};

void peer_session_close(struct peer_session *ps);

/* Source: secure the dialled socket, name the guest, authenticate, then
 * open `channels` data channels to the port the destination offers (each
 * TLS too, each proving the session's token). The session owns fd from
 * here on. -errno with err when refused. */
/* What a standby must know of its arbiter to take the guest over, and of
 * its primary to protect the guest in turn once it has. */
struct peer_arbiter {
	char endpoints[256];		/* "" = none */
	int ttl_s;
	unsigned epoch_ms;		/* the primary's fixed epoch, 0 = adaptive */
	int home_port;			/* dialer: its service's port for peers */
	char primary[300];		/* accepter: that service, HOST:PORT ("": unknown) */
	/* replicate-in: the primary guest process's lineage (PEER_LINEAGE_LEN
	 * hex digits, "" = none), what its later syncs prove they come from
	 * the same guest with (worker_repl.c) */
	char lineage[PEER_LINEAGE_LEN + 1];
};

/* op: "migrate-in", or "replicate-in" for a standby (arb: its arbiter, or
 * NULL). rdma: data channels over RDMA instead of TLS/TCP (control stays).
 * job names the migration, so the destination can answer for it later. */
/* postcopy: the last of the channels is post-copy's fault channel. */
int peer_dial(const struct peer_config *pc, int fd, const char *host, const char *op,
	      const char *name, const char *job, const struct peer_arbiter *arb,
	      unsigned channels, bool rdma, bool postcopy, struct peer_session *ps, char *err,
	      size_t errlen);

/* Source, after an uncertain handover (op "handover"): ask the destination
 * what it decided for the guest's job (one of the PEER_HANDOVER_ words
 * below, with a detail for the operator). With op "postcopy-ask", during a
 * post-copy recovery: whether the job's process is still there
 * (PEER_POSTCOPY_ALIVE or _GONE). The connection is closed after. */
int peer_ask_handover(const struct peer_config *pc, int fd, const char *host, const char *op,
		      const char *name, const char *job, char *decision, size_t len,
		      char *detail, size_t detail_len, char *err, size_t errlen);

#define PEER_HANDOVER_RUNS	"runs"		/* it decided to run the guest */
#define PEER_HANDOVER_DISCARDED	"discarded"	/* it decided never to */
#define PEER_HANDOVER_NEVER	"never-ran"	/* no process of the job left, no decision */
#define PEER_HANDOVER_DECIDING	"deciding"	/* its process still waits for GO */
#define PEER_HANDOVER_SILENT	"not-answering"	/* its process holds the name, silent */
#define PEER_POSTCOPY_ALIVE	"alive"		/* the job's process waits for its pages */
#define PEER_POSTCOPY_GONE	"gone"		/* no process of the job: the guest is lost */

/* `vmigrate check HOST`: the path a migration to HOST would take, tried
 * end to end: the session (TLS, hello, peer key) as a migration opens it,
 * a data channel on the port HOST offers, and what that channel carries
 * in `seconds` (at most 5) as HOST's side measures it; then, asked to,
 * HOST tries the same back to the dialer's service (a migration back, a
 * standby protecting the guest on the old primary's host), and says how
 * it went. */
struct peer_path {
	int stage;			/* how far it got: PEER_PROBE_* */
	char peer_name[128];		/* the name in its certificate ("" on plain TCP) */
	double reach_ms;		/* the TCP connection (the way back only) */
	double session_ms;		/* TLS, hello and authentication */
	int data_port;
	uint64_t bytes;			/* received on the data channel */
	double seconds;			/* from its first byte to the last */
	char error[256];		/* where it stopped, why (the way back only) */
};

struct peer_probe {
	struct peer_path out;		/* from us to HOST */
	bool back_asked;
	bool back_answered;		/* HOST said how its way back went */
	char back_addr[300];		/* where HOST dialled: our address as it sees
					 * us, and our service's port */
	struct peer_path back;		/* from HOST to us, as HOST tried it */
};

#define PEER_PROBE_REACHED	1	/* the TCP connection (the way back only) */
#define PEER_PROBE_SESSION	2	/* secured, greeted, authenticated */
#define PEER_PROBE_DATA		3	/* a data channel on the port offered */
#define PEER_PROBE_DONE		4	/* bytes measured */

/* Dialer (fd from peer_connect, owned from here on); back_port > 0: ask
 * the listener to check the way back to our service on that port. 0, or
 * -errno with err (the way back's outcome is in r, not in the return). */
int peer_probe(const struct peer_config *pc, int fd, const char *host, double seconds,
	       int back_port, struct peer_probe *r, char *err, size_t errlen);
/* Listener, after peer_accept() returned a "probe" hello; closes x.
 * back: where to check the way back to (the hello's home_port on the
 * dialer's address, h->arb.primary), "" when not asked. */
int peer_answer_probe(const struct peer_config *pc, struct xport *x, const char *back,
		      char *err, size_t errlen);

/* What a dialer asked for. */
struct peer_hello {
	char op[16];			/* "migrate-in", "replicate-in", "handover" or "probe" */
	char name[64];
	char job[64];
	unsigned channels;		/* data channels asked for */
	bool rdma;
	bool postcopy;			/* the last data channel is the fault channel */
	struct peer_arbiter arb;	/* replicate-in; arb.primary: the dialer's
					 * service, when it said its port */
	bool check_back;		/* probe: try the way back to arb.primary */
};

/* Destination: secure the accepted socket, read the hello, authenticate.
 * Then, for migrate-in, peer_welcome() or peer_answer(x, false, why); for
 * handover, peer_answer_handover(). */
struct xport *peer_accept(const struct peer_config *pc, int fd, struct peer_hello *h,
			  char *err, size_t errlen);
int peer_answer(struct xport *x, bool ok, const char *why);
int peer_answer_handover(struct xport *x, const char *decision, const char *detail);
/* Destination: say yes, offer a data port on the control connection's
 * address, and take the data channels (bounded by the handshake timeout).
 * format_minor: the highest minor of the record format it reads (the
 * source sends LIVE records only from CKPT_MINOR_LIVE on). */
int peer_welcome(const struct peer_config *pc, struct xport *control, unsigned channels,
		 bool rdma, bool keep_listener, unsigned format_minor, struct peer_session *ps,
		 char *err, size_t errlen);

/* A post-copy recovery: n connections to the data port of the session
 * (ps->data_port, ps->token) on host, each TLS (or TCP) and proven by the
 * token, index 0 the control, 1 the fault channel, then the data channels;
 * and the destination's side, on the listener peer_welcome kept, within
 * timeout_ms. */
#define PEER_RESUME_OP	"postcopy-resume"
int peer_redial(const struct peer_config *pc, const char *host, int port, const char *token,
		unsigned n, struct xport **out, char *err, size_t errlen);
int peer_take_resume(const struct peer_config *pc, const struct peer_session *ps, unsigned n,
		     struct xport **out, int timeout_ms, char *err, size_t errlen);

#endif

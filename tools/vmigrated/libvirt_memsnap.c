/*
 * libvirt's external memory snapshot into a FIFO (libvirt_memsnap.h).
 *
 *   thread:  virDomainSnapshotCreateXML(memory file = DIR/memory, live)
 *   libvirt: open DIR/memory, header (partial), XML, QEMU's stream, close;
 *            open DIR/memory again, header (complete), close; resume
 *   here:    r1 = DIR/memory, r2 = DIR/memory.end (read ends, before
 *            libvirt opens anything); header read: r2's FIFO renamed over
 *            DIR/memory, so the stream ends in r1's EOF and the second
 *            header comes on r2, never run together with the stream's end
 *   guard:   a child holding r1 and r2 too, for as long as we live
 *
 * A FIFO libvirt opens with no reader blocks libvirt for good, with the
 * domain paused if it is the second open: r2 stays open until libvirt's
 * job returned, and should this process die first, the guard reads and
 * drops what libvirt still writes (its job then ends, the domain resumes)
 * and removes DIR. DIR is named after our PID.
 */
#include "libvirt_memsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "libvirt_save_image.h"

#define STALL_MS	60000		/* libvirt sent nothing for this long: give up */
#define FAULT_AFTER	(4u << 20)	/* bytes of stream before lvsnap-reader-dies fires */
#define GUARD_IDLE_S	5.0		/* the guard, after our death: nothing came this long */
#define GUARD_MAX_FD	4096
#define PIPE_BYTES	(1 << 20)	/* the stream's FIFO buffer */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* libvirt's job, in a thread of its own: it blocks until the job ended. */
struct api_call {
	struct lv_host *h;
	const char *name, *fifo;
	bool live;
	int done_fd;			/* written once the call returned */
	int ret;			/* set by the thread before done_fd */
	char err[512];
};

static void *api_main(void *arg)
{
	struct api_call *a = arg;

	a->ret = lv_snapshot_memory(a->h, a->name, a->fifo, a->live, a->err, sizeof(a->err));
	while (write(a->done_fd, "", 1) < 0 && errno == EINTR)
		;
	return NULL;
}

static void say(const char *what, const char *dir)
{
	if (write(2, what, strlen(what)) < 0 || write(2, dir, strlen(dir)) < 0 ||
	    write(2, "\n", 1) < 0)
		return;
}

/* The guard's life (see the top). Only async-signal-safe calls: the
 * process it was forked from may have threads. */
static _Noreturn void guard_main(int ctl, int r1, int r2, const char *dir, const char *fifo,
				 const char *next)
{
	static char sink[64 << 10];
	double idle_since;
	ssize_t n;
	char c;

	/* nothing else of the service's: its sockets and pipes see our end */
	for (int fd = 3; fd < GUARD_MAX_FD; fd++)
		if (fd != ctl && fd != r1 && fd != r2)
			close(fd);
	while ((n = read(ctl, &c, 1)) < 0 && errno == EINTR)
		;
	if (n == 1)
		_exit(0);	/* the capture ended and cleans up itself */
	/* stderr is the service's log */
	say("vmigrated: a libvirt memory snapshot's reader died: dropping what libvirt "
	    "still writes into ", dir);
	idle_since = now_s();
	while (now_s() - idle_since < GUARD_IDLE_S) {
		struct pollfd pfd[2] = { { .fd = r1, .events = POLLIN },
					 { .fd = r2, .events = POLLIN } };
		bool got = false;

		poll(pfd, 2, 100);
		while (read(r1, sink, sizeof(sink)) > 0 || read(r2, sink, sizeof(sink)) > 0)
			got = true;
		if (got)
			idle_since = now_s();
		else
			usleep(20000);	/* no writer: poll says so at once, every time */
	}
	unlink(next);
	unlink(fifo);
	say(rmdir(dir) ? "vmigrated: could not remove " : "vmigrated: removed ", dir);
	_exit(0);
}

static void stop_guard(pid_t *guard, int ctl)
{
	if (*guard <= 0)
		return;
	while (write(ctl, "d", 1) < 0 && errno == EINTR)
		;
	waitpid(*guard, NULL, 0);
	*guard = -1;
}

enum phase { PH_HEADER, PH_XML, PH_STREAM, PH_TRAILER, PH_DONE };

struct reader {
	struct lvmem_job *j;
	enum phase ph;
	struct lvsave_header first, last;
	size_t have;			/* bytes of first (PH_HEADER) or last (PH_TRAILER) */
	uint32_t skip;			/* XML, cookie and padding still to skip */
	const char *fifo, *next;
	int r2;
};

/* The second FIFO under the first's name: libvirt's second open finds it. */
static int swap_fifo(struct reader *r, char *err, size_t errlen)
{
	if (rename(r->next, r->fifo) < 0) {
		int e = errno;

		snprintf(err, errlen, "the FIFO for libvirt's second header: %s", strerror(e));
		return -e;
	}
	return 0;
}

static int take(void *dst, size_t want, size_t *have, const uint8_t **p, size_t *left)
{
	size_t n = want - *have < *left ? want - *have : *left;

	memcpy((uint8_t *)dst + *have, *p, n);
	*have += n;
	*p += n;
	*left -= n;
	return *have == want;
}

/* Bytes from the FIFO of the current phase. */
static int consume(struct reader *r, const uint8_t *p, size_t left, char *err, size_t errlen)
{
	struct lvmem_job *j = r->j;
	int ret = 0;

	while (left && !ret) {
		switch (r->ph) {
		case PH_HEADER:
			if (!take(&r->first, sizeof(r->first), &r->have, &p, &left))
				break;
			ret = lvsave_header_check(&r->first, true, &r->skip, err, errlen);
			if (!ret)
				ret = swap_fifo(r, err, errlen);
			r->ph = PH_XML;
			break;
		case PH_XML: {
			size_t n = r->skip < left ? r->skip : left;

			r->skip -= (uint32_t)n;
			p += n;
			left -= n;
			if (!r->skip)
				r->ph = PH_STREAM;
			break;
		}
		case PH_STREAM:
			j->stream_began = true;
			if ((ret = j->feed(j->opaque, p, left)))
				snprintf(err, errlen, "QEMU's stream refused");
			j->stream_bytes += left;
			left = 0;
			if (!ret && j->stream_bytes >= FAULT_AFTER && fault_point("lvsnap-reader-dies")) {
				snprintf(err, errlen, "fault point lvsnap-reader-dies: the FIFO's "
					 "reader went away");
				ret = -EPIPE;
			}
			break;
		case PH_TRAILER:
			if (!take(&r->last, sizeof(r->last), &r->have, &p, &left))
				break;
			if (left) {
				snprintf(err, errlen, "libvirt wrote more after its save image's "
					 "second header");
				return -EBADMSG;
			}
			ret = lvsave_header_check(&r->last, false, &r->skip, err, errlen);
			if (!ret && memcmp(&r->first.version, &r->last.version,
					   sizeof(r->last) - sizeof(r->last.magic))) {
				snprintf(err, errlen, "libvirt's second header differs from its first");
				ret = -EBADMSG;
			}
			break;
		case PH_DONE:
			return -EBADMSG;
		}
	}
	return ret;
}

int lvmem_capture(struct lvmem_job *j, char *err, size_t errlen)
{
	static uint8_t buf[256 << 10];
	char dir[600], fifo[700], next[720];
	struct reader r = { .j = j, .ph = PH_HEADER, .fifo = fifo, .next = next, .r2 = -1 };
	struct api_call a = { .h = j->h, .name = j->name, .fifo = fifo, .live = j->live };
	int r1 = -1, done[2] = { -1, -1 }, ctl[2] = { -1, -1 }, ret = 0;
	bool job_ended = false;
	pid_t guard = -1;
	pthread_t t;

	j->t_start = now_s();
	snprintf(dir, sizeof(dir), "%s/lvsnap-%ld-XXXXXX", j->dir, (long)getpid());
	if (!mkdtemp(dir)) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return ret;
	}
	snprintf(fifo, sizeof(fifo), "%s/memory", dir);
	snprintf(next, sizeof(next), "%s/memory.end", dir);
	/* the read ends first: libvirt's opens for writing then do not block */
	if (mkfifo(fifo, 0600) < 0 || (r1 = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 ||
	    mkfifo(next, 0600) < 0 || (r.r2 = open(next, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 ||
	    pipe2(done, O_CLOEXEC) < 0 || pipe2(ctl, O_CLOEXEC) < 0) {
		ret = -errno;
		snprintf(err, errlen, "the FIFO %s: %s", fifo, strerror(errno));
		goto out;
	}
	/* fewer, larger reads (the default is 64 KiB) */
	fcntl(r1, F_SETPIPE_SZ, PIPE_BYTES);
	guard = fork();
	if (guard == 0)
		guard_main(ctl[0], r1, r.r2, dir, fifo, next);
	if (guard < 0) {
		ret = -errno;
		snprintf(err, errlen, "fork: %s", strerror(errno));
		goto out;
	}
	close(ctl[0]);
	ctl[0] = -1;
	a.done_fd = done[1];
	if (pthread_create(&t, NULL, api_main, &a)) {
		ret = -EAGAIN;
		snprintf(err, errlen, "pthread_create failed");
		goto out;
	}
	while (!ret && r.ph != PH_DONE && !job_ended) {
		int in = r.ph == PH_TRAILER ? r.r2 : r1;
		struct pollfd pfd[2] = { { .fd = in, .events = POLLIN },
					 { .fd = done[0], .events = POLLIN } };
		int n = poll(pfd, 2, STALL_MS);
		ssize_t len;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n ? -errno : -ETIMEDOUT;
			if (n)
				snprintf(err, errlen, "poll: %s", strerror(errno));
			else
				snprintf(err, errlen, "libvirt's memory snapshot sent nothing for %d s",
					 STALL_MS / 1000);
			break;
		}
		if (!pfd[0].revents) {
			job_ended = true;	/* before its image was whole: it says why */
			break;
		}
		len = read(in, buf, sizeof(buf));
		if (len < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (len < 0) {
			ret = -errno;
			snprintf(err, errlen, "reading libvirt's save image: %s", strerror(errno));
		} else if (len == 0 && r.ph == PH_STREAM) {
			j->t_eof = now_s();	/* QEMU and libvirt closed it: the stream ended */
			r.ph = PH_TRAILER;
			r.have = 0;
		} else if (len == 0 && r.ph == PH_TRAILER && r.have == sizeof(r.last)) {
			r.ph = PH_DONE;
		} else if (len == 0) {
			/* libvirt let go of the FIFO early: its job failed */
			job_ended = true;
		} else {
			ret = consume(&r, buf, (size_t)len, err, errlen);
		}
	}
	if (ret == -ETIMEDOUT) {
		char why[256];

		lv_abort_job(j->h, j->name, why, sizeof(why));
	}
	/* the guard lets go of r1 first: libvirt's writes into r1 fail from
	 * now on, its job ends */
	stop_guard(&guard, ctl[1]);
	close(r1);
	r1 = -1;
	pthread_join(t, NULL);
	j->t_done = now_s();
	if (a.ret && !ret) {
		ret = a.ret;
		snprintf(err, errlen, "libvirt's memory snapshot failed: %s", a.err);
	} else if (!ret && r.ph != PH_DONE) {
		ret = -EPIPE;
		snprintf(err, errlen, "libvirt's memory snapshot ended before its save image "
			 "was whole");
	} else if (a.ret) {
		size_t l = strlen(err);

		snprintf(err + l, errlen - l, " (libvirt: %s)", a.err);
	}
out:
	stop_guard(&guard, ctl[1]);
	for (int i = 0; i < 2; i++)
		if (ctl[i] >= 0)
			close(ctl[i]);
	if (r1 >= 0)
		close(r1);
	if (r.r2 >= 0)
		close(r.r2);
	for (int i = 0; i < 2; i++)
		if (done[i] >= 0)
			close(done[i]);
	unlink(next);
	unlink(fifo);		/* libvirt may have removed it already (its job failed) */
	rmdir(dir);
	return ret;
}

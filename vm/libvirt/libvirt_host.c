/*
 * libvirt_host: the calls vmigrated makes to the host's libvirt (see
 * libvirt_host.h). A thin layer over libvirt's C API that turns its
 * objects into plain structs and its errors into -errno plus a message.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include "libvirt_host.h"

struct lv_host {
	virConnectPtr conn;
};

const char *const lv_stream_caps[] = {
	"xbzrle", "compress", "multifd", "postcopy-ram", "postcopy-preempt", "x-colo",
	"dirty-bitmaps", "block", "zero-copy-send", NULL,
};

/* libvirt prints every error on stderr unless told otherwise: ours go
 * through err, once, where they are handled. */
static void quiet_errors(void *opaque, virErrorPtr e)
{
	(void)opaque;
	(void)e;
}

static int fail(char *err, size_t errlen, const char *what)
{
	const char *m = virGetLastErrorMessage();
	virErrorPtr e = virGetLastError();
	int ret = -EIO;

	if (e && (e->code == VIR_ERR_NO_DOMAIN))
		ret = -ENOENT;
	else if (e && e->code == VIR_ERR_OPERATION_INVALID)
		ret = -EINVAL;
	snprintf(err, errlen, "%s: %s", what, m && *m ? m : "libvirt gave no reason");
	virResetLastError();
	return ret;
}

struct lv_host *lv_open(const char *uri, char *err, size_t errlen)
{
	struct lv_host *h;

	virSetErrorFunc(NULL, quiet_errors);
	h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->conn = virConnectOpen(uri);
	if (!h->conn) {
		char what[300];

		snprintf(what, sizeof(what), "libvirt at %s", uri);
		fail(err, errlen, what);
		free(h);
		return NULL;
	}
	return h;
}

void lv_close(struct lv_host *h)
{
	if (!h)
		return;
	virConnectClose(h->conn);
	free(h);
}

static const char *state_word(int st)
{
	switch (st) {
	case VIR_DOMAIN_RUNNING: return "running";
	case VIR_DOMAIN_BLOCKED: return "idle";
	case VIR_DOMAIN_PAUSED: return "paused";
	case VIR_DOMAIN_SHUTDOWN: return "in shutdown";
	case VIR_DOMAIN_SHUTOFF: return "shut off";
	case VIR_DOMAIN_CRASHED: return "crashed";
	case VIR_DOMAIN_PMSUSPENDED: return "pmsuspended";
	default: return "no state";
	}
}

static int describe(virDomainPtr dom, struct lv_domain *d, char *err, size_t errlen)
{
	virDomainInfo info;
	const char *name = virDomainGetName(dom);
	char uuid[VIR_UUID_STRING_BUFLEN];

	memset(d, 0, sizeof(*d));
	if (virDomainGetInfo(dom, &info) < 0)
		return fail(err, errlen, "virDomainGetInfo");
	snprintf(d->name, sizeof(d->name), "%s", name ? name : "?");
	if (virDomainGetUUIDString(dom, uuid) == 0)
		snprintf(d->uuid, sizeof(d->uuid), "%s", uuid);
	snprintf(d->state, sizeof(d->state), "%s", state_word(info.state));
	d->active = virDomainIsActive(dom) == 1;
	d->mem_bytes = (uint64_t)info.memory * 1024;
	d->max_mem_bytes = (uint64_t)info.maxMem * 1024;
	d->vcpus = info.nrVirtCpu;
	return 0;
}

int lv_list(struct lv_host *h, struct lv_domain **out, size_t *n, char *err, size_t errlen)
{
	virDomainPtr *doms = NULL;
	struct lv_domain *d;
	int nr, ret = 0;
	size_t got = 0;

	*out = NULL;
	*n = 0;
	nr = virConnectListAllDomains(h->conn, &doms, 0);
	if (nr < 0)
		return fail(err, errlen, "virConnectListAllDomains");
	d = calloc(nr ? (size_t)nr : 1, sizeof(*d));
	if (!d) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
	}
	for (int i = 0; i < nr; i++) {
		/* a domain that went away between the list and the look is left out */
		if (d && describe(doms[i], &d[got], err, errlen) == 0)
			got++;
		virDomainFree(doms[i]);
	}
	free(doms);
	virResetLastError();
	if (ret)
		return ret;
	*out = d;
	*n = got;
	return 0;
}

static virDomainPtr find(struct lv_host *h, const char *name, char *err, size_t errlen,
			 int *ret)
{
	virDomainPtr dom = virDomainLookupByName(h->conn, name);

	if (!dom) {
		char what[320];

		snprintf(what, sizeof(what), "libvirt domain '%s'", name);
		*ret = fail(err, errlen, what);
	}
	return dom;
}

int lv_lookup(struct lv_host *h, const char *name, struct lv_domain *d, char *err,
	      size_t errlen)
{
	int ret = 0;
	virDomainPtr dom = find(h, name, err, errlen, &ret);

	if (!dom)
		return ret;
	ret = describe(dom, d, err, errlen);
	virDomainFree(dom);
	return ret;
}

int lv_stream_caps_on(struct lv_host *h, const char *name, char *names, size_t len, char *err,
		      size_t errlen)
{
	struct json_object *rep = NULL, *caps;
	char *text = NULL;
	int ret = 0;
	virDomainPtr dom = find(h, name, err, errlen, &ret);

	names[0] = 0;
	if (!dom)
		return ret;
	if (virDomainQemuMonitorCommand(dom, "{\"execute\":\"query-migrate-capabilities\"}",
					&text, 0) < 0) {
		ret = fail(err, errlen, "query-migrate-capabilities");
		goto out_dom;
	}
	rep = json_tokener_parse(text);
	if (!rep || !json_object_object_get_ex(rep, "return", &caps) ||
	    !json_object_is_type(caps, json_type_array)) {
		snprintf(err, errlen, "query-migrate-capabilities: QEMU's answer does not parse");
		ret = -EPROTO;
		goto out_rep;
	}
	for (size_t i = 0; i < json_object_array_length(caps); i++) {
		struct json_object *c = json_object_array_get_idx(caps, i), *cn, *cs;
		const char *cap;

		if (!json_object_object_get_ex(c, "capability", &cn) ||
		    !json_object_object_get_ex(c, "state", &cs) || !json_object_get_boolean(cs))
			continue;
		cap = json_object_get_string(cn);
		for (size_t k = 0; lv_stream_caps[k]; k++) {
			size_t used = strlen(names);

			if (strcmp(cap, lv_stream_caps[k]))
				continue;
			snprintf(names + used, len - used, "%s%s", used ? "," : "", cap);
		}
	}
out_rep:
	json_object_put(rep);
	free(text);
out_dom:
	virDomainFree(dom);
	return ret;
}

int lv_migrate(struct lv_host *h, const char *name, const struct lv_migrate_params *p,
	       char *err, size_t errlen)
{
	virTypedParameterPtr params = NULL;
	int nparams = 0, maxparams = 0, ret = 0;
	virDomainPtr dom = find(h, name, err, errlen, &ret);

	if (!dom)
		return ret;
	if (virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_URI,
				    p->migrate_uri) < 0 ||
	    (p->bandwidth && virTypedParamsAddULLong(&params, &nparams, &maxparams,
						     VIR_MIGRATE_PARAM_BANDWIDTH,
						     (p->bandwidth + (1 << 20) - 1) >> 20) < 0)) {
		ret = fail(err, errlen, "migration parameters");
		goto out;
	}
	if (virDomainMigrateToURI3(dom, p->dest_uri, params, (unsigned)nparams,
				   VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER) < 0)
		ret = fail(err, errlen, "libvirt's migration");
out:
	virTypedParamsFree(params, nparams);
	virDomainFree(dom);
	return ret;
}

int lv_max_downtime(struct lv_host *h, const char *name, uint64_t *ms, char *err,
		    size_t errlen)
{
	unsigned long long v = 0;
	int ret = 0;
	virDomainPtr dom = find(h, name, err, errlen, &ret);

	if (!dom)
		return ret;
	if (virDomainMigrateGetMaxDowntime(dom, &v, 0) < 0)
		ret = fail(err, errlen, "virDomainMigrateGetMaxDowntime");
	*ms = v;
	virDomainFree(dom);
	return ret;
}

int lv_set_max_downtime(struct lv_host *h, const char *name, uint64_t ms, char *err,
			size_t errlen)
{
	int ret = 0;
	virDomainPtr dom = find(h, name, err, errlen, &ret);

	if (!dom)
		return ret;
	if (virDomainMigrateSetMaxDowntime(dom, ms, 0) < 0)
		ret = fail(err, errlen, "virDomainMigrateSetMaxDowntime");
	virDomainFree(dom);
	return ret;
}

static uint64_t ull(virTypedParameterPtr params, int n, const char *key)
{
	unsigned long long v = 0;

	if (virTypedParamsGetULLong(params, n, key, &v) <= 0)
		v = 0;
	return v;
}

int lv_job_stats(struct lv_host *h, const char *name, bool completed, struct lv_job_stats *s,
		 char *err, size_t errlen)
{
	virTypedParameterPtr params = NULL;
	int n = 0, type = VIR_DOMAIN_JOB_NONE, ret = 0;
	virDomainPtr dom = find(h, name, err, errlen, &ret);

	memset(s, 0, sizeof(*s));
	if (!dom)
		return ret;
	if (virDomainGetJobStats(dom, &type, &params, &n,
				 /* kept: they are libvirt's to show (domjobinfo --completed) */
				 completed ? VIR_DOMAIN_JOB_STATS_COMPLETED |
				 VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED : 0) < 0) {
		ret = fail(err, errlen, "virDomainGetJobStats");
		goto out;
	}
	s->active = type != VIR_DOMAIN_JOB_NONE;
	s->elapsed_ms = ull(params, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
	s->data_total = ull(params, n, VIR_DOMAIN_JOB_DATA_TOTAL);
	s->data_processed = ull(params, n, VIR_DOMAIN_JOB_DATA_PROCESSED);
	s->data_remaining = ull(params, n, VIR_DOMAIN_JOB_DATA_REMAINING);
	s->memory_iteration = ull(params, n, VIR_DOMAIN_JOB_MEMORY_ITERATION);
	s->dirty_rate = ull(params, n, VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE);
	s->memory_bps = ull(params, n, VIR_DOMAIN_JOB_MEMORY_BPS);
	s->downtime_ms = ull(params, n, VIR_DOMAIN_JOB_DOWNTIME);
	virTypedParamsFree(params, n);
out:
	virDomainFree(dom);
	return ret;
}

int lv_abort_job(struct lv_host *h, const char *name, char *err, size_t errlen)
{
	int ret = 0;
	virDomainPtr dom = find(h, name, err, errlen, &ret);

	if (!dom)
		return ret;
	if (virDomainAbortJob(dom) < 0)
		ret = fail(err, errlen, "virDomainAbortJob");
	virDomainFree(dom);
	return ret;
}

/* QEMU's {"error":{"desc":...}} as the message, or its "return". */
static int qmp_answer(const char *text, struct json_object **ret, char *err, size_t errlen)
{
	struct json_object *rep = json_tokener_parse(text), *r, *e, *d;
	int rc = 0;

	if (!rep) {
		snprintf(err, errlen, "QEMU's answer does not parse");
		return -EPROTO;
	}
	if (json_object_object_get_ex(rep, "error", &e)) {
		snprintf(err, errlen, "%s", json_object_object_get_ex(e, "desc", &d) ?
			 json_object_get_string(d) : "QEMU refused the command");
		rc = -EIO;
	} else if (!json_object_object_get_ex(rep, "return", &r)) {
		snprintf(err, errlen, "QEMU's answer has no return");
		rc = -EPROTO;
	} else if (ret) {
		*ret = json_object_get(r);
	}
	json_object_put(rep);
	return rc;
}

int lv_qmp(struct lv_host *h, const char *name, const char *cmd, int fd,
	   struct json_object **ret, char *err, size_t errlen)
{
	char *text = NULL;
	int rc = 0, n;
	virDomainPtr dom = find(h, name, err, errlen, &rc);

	if (ret)
		*ret = NULL;
	if (!dom)
		return rc;
	if (fd >= 0)
		n = virDomainQemuMonitorCommandWithFiles(dom, cmd, 1, &fd, NULL, NULL, &text, 0);
	else
		n = virDomainQemuMonitorCommand(dom, cmd, &text, 0);
	if (n < 0)
		rc = fail(err, errlen, "QEMU's monitor");
	else
		rc = qmp_answer(text, ret, err, errlen);
	free(text);
	virDomainFree(dom);
	return rc;
}

char *lv_domain_xml(struct lv_host *h, const char *name, char *err, size_t errlen)
{
	int rc = 0;
	virDomainPtr dom = find(h, name, err, errlen, &rc);
	char *xml;

	if (!dom)
		return NULL;
	xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_SECURE | VIR_DOMAIN_XML_MIGRATABLE);
	if (!xml)
		fail(err, errlen, "virDomainGetXMLDesc");
	virDomainFree(dom);
	return xml;
}

int lv_domain_uuid(struct lv_host *h, const char *name, uint8_t uuid[16], char *err,
		   size_t errlen)
{
	int rc = 0;
	virDomainPtr dom = find(h, name, err, errlen, &rc);

	if (!dom)
		return rc;
	if (virDomainGetUUID(dom, uuid) < 0)
		rc = fail(err, errlen, "virDomainGetUUID");
	virDomainFree(dom);
	return rc;
}

int lv_suspend(struct lv_host *h, const char *name, char *err, size_t errlen)
{
	int rc = 0;
	virDomainPtr dom = find(h, name, err, errlen, &rc);

	if (!dom)
		return rc;
	if (virDomainSuspend(dom) < 0)
		rc = fail(err, errlen, "virDomainSuspend");
	virDomainFree(dom);
	return rc;
}

int lv_resume(struct lv_host *h, const char *name, char *err, size_t errlen)
{
	int rc = 0;
	virDomainPtr dom = find(h, name, err, errlen, &rc);

	if (!dom)
		return rc;
	if (virDomainResume(dom) < 0)
		rc = fail(err, errlen, "virDomainResume");
	virDomainFree(dom);
	return rc;
}

int lv_restore(struct lv_host *h, const char *path, bool paused, char *err, size_t errlen)
{
	if (virDomainRestoreFlags(h->conn, path, NULL, paused ? VIR_DOMAIN_SAVE_PAUSED : 0) < 0)
		return fail(err, errlen, "virDomainRestoreFlags");
	return 0;
}

/* What a snapshot's XML may name without quoting: target devs, our paths. */
static bool xml_plain(const char *s)
{
	return s[0] && !strpbrk(s, "'\"<>&");
}

/* <disk name='DEV' snapshot='no'/> for each disk of the domain's XML, so
 * that libvirt's snapshot holds the memory only, as every other path does. */
static int disk_exclusions(const char *xml, char *out, size_t len, char *err, size_t errlen)
{
	const char *p = xml;
	size_t used = 0;

	out[0] = 0;
	while ((p = strstr(p, "<disk "))) {
		const char *end = strstr(p, "</disk>"), *t = strstr(p, "<target dev=");
		char dev[64];
		size_t n;
		int w;

		if (!end || !t || t > end || (t[12] != '\'' && t[12] != '"') ||
		    !(n = strcspn(t + 13, "'\"")) || n >= sizeof(dev)) {
			snprintf(err, errlen, "the domain's XML has a disk without a target vmigrate "
				 "can name");
			return -EINVAL;
		}
		memcpy(dev, t + 13, n);
		dev[n] = 0;
		w = snprintf(out + used, len - used, "<disk name='%s' snapshot='no'/>", dev);
		if (!xml_plain(dev) || w < 0 || (size_t)w >= len - used) {
			snprintf(err, errlen, "the domain's disk '%s' is not one vmigrate can name "
				 "in a snapshot", dev);
			return -EINVAL;
		}
		used += (size_t)w;
		p = end;
	}
	return 0;
}

int lv_snapshot_memory(struct lv_host *h, const char *name, const char *path, bool live,
		       char *err, size_t errlen)
{
	char disks[4096], snapname[64], *xml = NULL, *snapxml = NULL;
	virDomainSnapshotPtr snap;
	int ret = 0;
	virDomainPtr dom = find(h, name, err, errlen, &ret);

	if (!dom)
		return ret;
	if (!xml_plain(path)) {
		snprintf(err, errlen, "%s: a memory file name with quotes or markup", path);
		ret = -EINVAL;
		goto out;
	}
	xml = virDomainGetXMLDesc(dom, 0);
	if (!xml) {
		ret = fail(err, errlen, "virDomainGetXMLDesc");
		goto out;
	}
	if ((ret = disk_exclusions(xml, disks, sizeof(disks), err, errlen)))
		goto out;
	snprintf(snapname, sizeof(snapname), "vmigrate-%ld-%ld", (long)getpid(), (long)time(NULL));
	if (asprintf(&snapxml, "<domainsnapshot><name>%s</name><memory snapshot='external' "
		     "file='%s'/><disks>%s</disks></domainsnapshot>", snapname, path, disks) < 0) {
		snapxml = NULL;
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto out;
	}
	/* no metadata: the domain's snapshot list stays as it was */
	snap = virDomainSnapshotCreateXML(dom, snapxml, VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA |
					  (live ? VIR_DOMAIN_SNAPSHOT_CREATE_LIVE : 0));
	if (!snap)
		ret = fail(err, errlen, "virDomainSnapshotCreateXML");
	else
		virDomainSnapshotFree(snap);
	/* a libvirt that kept it anyway: its metadata goes, not the domain's state */
	snap = virDomainSnapshotLookupByName(dom, snapname, 0);
	if (snap) {
		virDomainSnapshotDelete(snap, VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY);
		virDomainSnapshotFree(snap);
	}
	virResetLastError();
out:
	free(snapxml);
	free(xml);
	virDomainFree(dom);
	return ret;
}

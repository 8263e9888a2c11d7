/*
 * Reading a checkpoint file end to end without restoring it: what
 * `vmigrate ckpt info` shows and `vmigrate ckpt verify` checks.
 */
#include "snapshot.h"
#include "qemu_ckpt.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int snap_key_load(const char *path, uint8_t key[64], char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n;

	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "key %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	if (st.st_mode & 0077) {
		close(fd);
		snprintf(err, errlen, "key %s must not be readable by others (chmod 600)", path);
		return -EPERM;
	}
	n = read(fd, key, 64);
	close(fd);
	if (n < 16) {
		snprintf(err, errlen, "key %s must hold 16 to 64 bytes", path);
		return -EINVAL;
	}
	return (int)n;
}

int snap_inspect(const char *path, const uint8_t *mac_key, size_t mac_key_len,
		 struct snap_inspect *out, char *err, size_t errlen)
{
	struct ckpt_reader_opts ro = { .mac_key = mac_key, .mac_key_len = mac_key_len };
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;
	struct vm_kvm_config cfg = { 0 };
	bool vcpu_seen[64] = { false };
	struct stat st;
	int fd, ret;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	out->file_bytes = (uint64_t)st.st_size;
	ckpt_fd_source(&fd, &src);
	r = ckpt_reader_new(&src, &ro);
	if (!r) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	while ((ret = ckpt_reader_next(r, &rec)) == 0) {
		out->records++;
		switch (rec.type) {
		case CKPT_REC_HEADER:
			out->info = *rec.u.header;
			break;
		case CKPT_REC_PARENT:
			out->has_parent = true;
			memcpy(out->parent_uuid, rec.u.parent.image_uuid, 16);
			memcpy(out->parent_digest, rec.u.parent.digest, 16);
			break;
		case CKPT_REC_MARKER:
			out->rounds++;
			break;
		case CKPT_REC_PAGES:
			for (uint32_t i = 0; i < rec.u.pages.count; i++) {
				const struct ckpt_page_entry *e = &rec.u.pages.entries[i];

				/* the reader refuses encodings it does not know */
				out->pages[e->encoding] += e->encoding == CKPT_ENC_ZERO ?
							   le32toh(e->size) : 1;
			}
			out->page_bytes += rec.u.pages.data_len;
			break;
		case CKPT_REC_STATE:
			out->state_records++;
			if (rec.u.state.kind == QCKPT_STATE_KIND)
				out->domain = true;
			else if (rec.u.state.kind == CKPT_STATE_VM && vm_kvm_config_from_record(
				    &rec, &cfg, err, errlen) == 0) {
				out->vcpus = cfg.nr_vcpus;
				out->mem_bytes = cfg.mem_bytes;
			} else if (rec.u.state.kind == CKPT_STATE_VCPU && rec.u.state.instance < 64) {
				vcpu_seen[rec.u.state.instance] = true;
			}
			break;
		case CKPT_REC_INDEX:
			out->indexed = true;
			break;
		case CKPT_REC_COMMIT:
			memcpy(out->digest, rec.u.commit.digest, 16);
			break;
		}
	}
	if (ret != 1) {
		snprintf(err, errlen, "%s: %s", path, ckpt_reader_errmsg(r));
		ret = -EBADMSG;
	} else if (out->domain) {
		/* a libvirt domain's: its own layout, checked by its module */
		ret = qckpt_file_check(path, mac_key, mac_key_len, &out->vcpus, &out->device_bytes,
				       err, errlen);
		for (unsigned i = 0; i < out->info.region_count; i++)
			out->mem_bytes += out->info.regions[i].size;
	} else if (!out->vcpus || out->vcpus > 64) {
		snprintf(err, errlen, "%s: no VM configuration record", path);
		ret = -EBADMSG;
	} else {
		ret = 0;
		for (unsigned v = 0; v < out->vcpus && !ret; v++)
			if (!vcpu_seen[v]) {
				snprintf(err, errlen, "%s: the state of vCPU %u is missing", path, v);
				ret = -EBADMSG;
			}
	}
	ckpt_reader_free(r);
	close(fd);
	return ret;
}

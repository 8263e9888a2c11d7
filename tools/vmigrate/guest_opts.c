/*
 * Parsing of the guest options for `run` and `start`.
 */
#include "guest_opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "help.h"
#include "ipc.h"
#include "units.h"

void guest_opts_init(struct guest_opts *g)
{
	*g = (struct guest_opts){ .mem = 1ull << 30, .guest = "memtouch",
		.mt = { .working_set = 64ull << 20, .seed = 1, .fill_first = true } };
}

int guest_opts_parse(struct guest_opts *g, int c, const char *arg, const char *cmd)
{
	const char *bad = NULL, *choices = NULL;
	uint64_t v;

	switch (c) {
	case GO_MEM: if (parse_size(arg, &g->mem)) bad = "--mem"; break;
	case GO_VCPUS:
		if (parse_uint(arg, &v) || v < 1 || v > 8)
			bad = "--vcpus", choices = "1 to 8";
		g->vcpus = (unsigned)v;
		break;
	case GO_GUEST: g->guest = arg; break;
	case GO_WS: if (parse_size(arg, &g->mt.working_set)) bad = "--working-set"; break;
	case GO_RATE: if (parse_rate(arg, &g->mt.dirty_rate)) bad = "--dirty-rate"; break;
	case GO_CONTENT:
		if (vm_memtouch_parse_content(arg, &g->mt.content))
			bad = "--content", choices = "random, text or zero-heavy";
		break;
	case GO_SEED: if (parse_uint(arg, &g->mt.seed)) bad = "--seed"; break;
	case GO_STOP: if (parse_uint(arg, &g->mt.stop_after)) bad = "--stop-after"; break;
	case GO_PREFILL: g->prefill = arg; break;
	case GO_DIRTY:
		if (!strcmp(arg, "bitmap"))
			g->dirty_mode = VM_DIRTY_BITMAP;
		else if (!strcmp(arg, "ring"))
			g->dirty_mode = VM_DIRTY_RING;
		else
			bad = "--dirty-mode", choices = "bitmap or ring";
		break;
	case GO_NOFILL: g->mt.fill_first = false; break;
	default:
		return 0;
	}
	if (bad) {
		cli_bad_value(cmd, bad, arg, choices);
		return -EINVAL;
	}
	return 1;
}

static int add_path(struct json_object *req, const char *key, const char *path, const char *cmd)
{
	char *abs = realpath(path, NULL);

	if (!abs) {
		int e = errno;

		cli_fail(1, cmd, ipc_errno_code(e), "%s: %s", path, strerror(e));
		return -e;
	}
	json_object_object_add(req, key, json_object_new_string(abs));
	free(abs);
	return 0;
}

int guest_opts_to_json(const struct guest_opts *g, struct json_object *req, const char *cmd)
{
	static const char *const contents[] = { "random", "text", "zero-heavy" };

	json_object_object_add(req, "mem", json_object_new_int64((int64_t)g->mem));
	json_object_object_add(req, "vcpus", json_object_new_int(g->vcpus ? (int)g->vcpus : 1));
	json_object_object_add(req, "working_set", json_object_new_int64((int64_t)g->mt.working_set));
	json_object_object_add(req, "dirty_rate", json_object_new_int64((int64_t)g->mt.dirty_rate));
	json_object_object_add(req, "content", json_object_new_string(contents[g->mt.content]));
	json_object_object_add(req, "seed", json_object_new_int64((int64_t)g->mt.seed));
	json_object_object_add(req, "stop_after", json_object_new_int64((int64_t)g->mt.stop_after));
	json_object_object_add(req, "fill_first", json_object_new_boolean(g->mt.fill_first));
	json_object_object_add(req, "dirty_mode", json_object_new_string(
		g->dirty_mode == VM_DIRTY_RING ? "ring" : "bitmap"));
	/* a path must still name the file from the service's directory */
	if (strchr(g->guest, '/')) {
		if (add_path(req, "guest", g->guest, cmd))
			return -EINVAL;
	} else {
		json_object_object_add(req, "guest", json_object_new_string(g->guest));
	}
	if (g->prefill && add_path(req, "prefill", g->prefill, cmd))
		return -EINVAL;
	return 0;
}

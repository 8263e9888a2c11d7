/*
 * The options that describe a guest, shared by `vmigrate run` (a guest in
 * the foreground) and `vmigrate start` (a guest under vmigrated).
 */
#ifndef CLI_GUEST_OPTS_H
#define CLI_GUEST_OPTS_H

#include <getopt.h>
#include <json-c/json.h>
#include <stdint.h>

#include "memtouch.h"
#include "vm.h"

enum {
	GO_MEM = 256, GO_VCPUS, GO_GUEST, GO_WS, GO_RATE, GO_CONTENT, GO_SEED, GO_STOP,
	GO_PREFILL, GO_DIRTY, GO_NOFILL,
	GO_END		/* commands number their own options from here */
};

#define GUEST_LONGOPTS							\
	{ "mem", required_argument, NULL, GO_MEM },			\
	{ "vcpus", required_argument, NULL, GO_VCPUS },			\
	{ "guest", required_argument, NULL, GO_GUEST },			\
	{ "working-set", required_argument, NULL, GO_WS },		\
	{ "dirty-rate", required_argument, NULL, GO_RATE },		\
	{ "content", required_argument, NULL, GO_CONTENT },		\
	{ "seed", required_argument, NULL, GO_SEED },			\
	{ "stop-after", required_argument, NULL, GO_STOP },		\
	{ "prefill", required_argument, NULL, GO_PREFILL },		\
	{ "dirty-mode", required_argument, NULL, GO_DIRTY },		\
	{ "no-fill", no_argument, NULL, GO_NOFILL }

#define GUEST_OPTS_HELP \
"  --mem SIZE            guest RAM, 64M to 8G (default 1G)\n" \
"  --vcpus N             1 to 8 (default 1)\n" \
"  --guest NAME|PATH     the built-in payload or a flat 64-bit binary (default memtouch)\n" \
"  --working-set SIZE    memtouch: memory it rewrites (default 64M)\n" \
"  --dirty-rate RATE     memtouch: e.g. 100M or 100M/s; 0 = flat out (default 0)\n" \
"  --content random|text|zero-heavy  memtouch: what it writes (default random)\n" \
"  --seed N              memtouch: content seed (default 1)\n" \
"  --stop-after N        memtouch: page writes per vCPU, then idle (default: never)\n" \
"  --no-fill             memtouch: pace the first pass too (default: fill it at once)\n" \
"  --prefill FILE        fill RAM above the working set from FILE\n" \
"  --dirty-mode bitmap|ring  KVM's dirty log: bitmap or ring (default bitmap)\n"

struct guest_opts {
	uint64_t mem;
	unsigned vcpus;			/* 0: not given */
	const char *guest;
	struct vm_memtouch_opts mt;
	const char *prefill;
	enum vm_dirty_mode dirty_mode;
};

void guest_opts_init(struct guest_opts *g);
/* 1 when c was a guest option, 0 when it is not one, -EINVAL (said why)
 * on a bad value. */
int guest_opts_parse(struct guest_opts *g, int c, const char *arg, const char *cmd);
/* The fields of a vmigrated start request; paths made absolute. */
int guest_opts_to_json(const struct guest_opts *g, struct json_object *req, const char *cmd);

#endif

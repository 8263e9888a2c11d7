/*
 * Migration statistics as JSON, with the names of QEMU's query-migrate so
 * operators' tooling reads them as it is.
 */
#include "migrate.h"

#include <json-c/json.h>
#include <stdio.h>

int mig_stats_json(const struct mig_stats *s, char *buf, size_t len)
{
	struct json_object *o = json_object_new_object();
	int n;

	json_object_object_add(o, "status", json_object_new_string(mig_status_name(s->status)));
	json_object_object_add(o, "total_time_ms", json_object_new_uint64(s->total_time_ms));
	json_object_object_add(o, "setup_time_ms", json_object_new_uint64(s->setup_time_ms));
	json_object_object_add(o, "downtime_ms", json_object_new_uint64(s->downtime_ms));
	json_object_object_add(o, "expected_downtime_ms",
			       json_object_new_uint64(s->expected_downtime_ms));
	json_object_object_add(o, "transferred_bytes", json_object_new_uint64(s->transferred_bytes));
	json_object_object_add(o, "ram_total_bytes", json_object_new_uint64(s->ram_total_bytes));
	/* QEMU's ram.remaining: this round's rest and pages dirtied again */
	json_object_object_add(o, "remaining_bytes",
			       json_object_new_uint64(s->remaining_pages * VM_PAGE_SIZE));
	json_object_object_add(o, "zero_pages", json_object_new_uint64(s->zero_pages));
	json_object_object_add(o, "normal_pages", json_object_new_uint64(s->normal_pages));
	json_object_object_add(o, "compressed_pages", json_object_new_uint64(s->compressed_pages));
	json_object_object_add(o, "zstd_pages", json_object_new_uint64(s->zstd_pages));
	if (s->compress[0])
		json_object_object_add(o, "compress", json_object_new_string(s->compress));
	json_object_object_add(o, "matched_pages", json_object_new_uint64(s->matched_pages));
	json_object_object_add(o, "dirty_sync_count", json_object_new_uint64(s->dirty_sync_count));
	json_object_object_add(o, "dirty_pages_rate", json_object_new_uint64(s->dirty_pages_rate));
	json_object_object_add(o, "mbps", json_object_new_double(s->mbps));
	json_object_object_add(o, "throttle_percentage",
			       json_object_new_int(s->throttle_percentage));
	json_object_object_add(o, "rounds", json_object_new_int(s->round));
	if (s->postcopy_bytes || s->status == MIG_POSTCOPY_ACTIVE ||
	    s->status == MIG_POSTCOPY_PAUSED || s->status == MIG_LOST) {
		json_object_object_add(o, "precopy_bytes", json_object_new_uint64(s->precopy_bytes));
		json_object_object_add(o, "downtime_bytes", json_object_new_uint64(s->downtime_bytes));
		json_object_object_add(o, "postcopy_bytes", json_object_new_uint64(s->postcopy_bytes));
		json_object_object_add(o, "postcopy_requests",
				       json_object_new_uint64(s->postcopy_requests));
		json_object_object_add(o, "postcopy_fault_p50_ms", json_object_new_double(s->fault_p50_ms));
		json_object_object_add(o, "postcopy_fault_p99_ms", json_object_new_double(s->fault_p99_ms));
		json_object_object_add(o, "postcopy_recoveries", json_object_new_int((int)s->recoveries));
	}
	if (s->error[0])
		json_object_object_add(o, "error", json_object_new_string(s->error));
	n = snprintf(buf, len, "%s", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

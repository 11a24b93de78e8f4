/* tuning.c - the knobs an experiment may turn without recompiling (the
 * environment of the node's process), each checked against its range when
 * the node starts: a typo or an absurd value stops the node with one line
 * that names the knob and what it accepts, rather than running quietly with
 * something else. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hk.h"

#define READ_HOLD_DEFAULT_US 50

struct knob {
	const char *name;
	uint64_t min, max, def;
	const char *unit;
};

static int number(const struct knob *k, uint64_t *out)
{
	const char *s = getenv(k->name);
	*out = k->def;
	if (!s)
		return 0;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-' || v < k->min || v > k->max) {
		hk_warn("%s=%s is out of range: use %lu..%lu (%s)", k->name, s, k->min, k->max,
			k->unit);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* The page hold-downs (home.c), the knobs hk_set_knob may change while the
 * guest runs: the event thread reads them without a lock, and a hold already
 * under way keeps the end it was given. */
static const struct knob page_hold = { "HK_PAGE_HOLD_US", 0, 100000, 1000,
				       "microseconds a page granted for writing stays, 0 = off" };
static const struct knob read_hold = { "HK_READ_HOLD_US", 0, 100000, READ_HOLD_DEFAULT_US,
				       "microseconds a page granted for writing stays before "
				       "another node reads it, 0 = off" };

static const struct knob migratory_hold = { "HK_MIGRATORY_HOLD_US", 0, 100000, 50,
					    "microseconds a page granted to a read that asks to "
					    "write stays before another node takes it, 0 = off" };

static uint64_t *runtime_knob(struct hk_tuning *t, const char *name, const struct knob **k)
{
	if (!strcmp(name, page_hold.name)) {
		*k = &page_hold;
		return &t->page_hold_ns;
	}
	if (!strcmp(name, read_hold.name)) {
		*k = &read_hold;
		return &t->read_hold_ns;
	}
	if (!strcmp(name, migratory_hold.name)) {
		*k = &migratory_hold;
		return &t->migratory_hold_ns;
	}
	return NULL;
}

int hk_set_knob(struct hk_node *n, const char *name, uint64_t value, char *why, size_t whylen)
{
	if (!n || !name)
		return -EINVAL;
	const struct knob *k = NULL;
	uint64_t *slot = runtime_knob(&n->tuning, name, &k);
	if (!slot) {
		snprintf(why, whylen, "%s cannot be changed while the node runs (only %s, %s and %s can)",
			 name, page_hold.name, read_hold.name, migratory_hold.name);
		return -ENOENT;
	}
	if (value < k->min || value > k->max) {
		snprintf(why, whylen, "%s=%lu is out of range: use %lu..%lu (%s)", name, value, k->min,
			 k->max, k->unit);
		return -EINVAL;
	}
	__atomic_store_n(slot, value * 1000, __ATOMIC_RELAXED);
	hk_info("%s=%lu (set while running)", name, value);
	return 0;
}

int hk_tuning_load(struct hk_tuning *t, bool event_rt)
{
	static const struct knob spin = { "HK_ADAPTIVE_SPIN", 0, 100000, 200, "microseconds, 0 = off" };
	static const struct knob fault = { "HK_FAULT_SPIN_US", 0, 100000, 20, "microseconds" };
	static const struct knob peer = { "HK_PEER_SPIN_US", 0, 100000, 50, "microseconds" };
	static const struct knob ra = { "HK_READAHEAD", 0, 64, 32, "pages, 0 = off" };
	static const struct knob ra_windows = { "HK_READAHEAD_WINDOWS", 1, 16, 4,
						"windows asked for ahead of a reader's last fault" };
	static const struct knob refetch = { "HK_REFETCH", 0, 64, 16, "pages, 0 = off" };
	static const struct knob migratory = { "HK_MIGRATORY", 0, 1, 1,
					       "1: a read of a page read-then-written here asks to write, 0: off" };
	static const struct knob cork = { "HK_LINK_CORK", 0, 1, 1,
					  "1: a batch of events sends in one write per link, 0: a write per frame" };
	/* the "cost" policy */
	static const struct knob hold = { "HK_HOLD_DOWN_US", 0, 10000000, 10000,
					  "microseconds a vCPU stays after it arrives" };
	static const struct knob hyst = { "HK_COST_HYSTERESIS_PCT", 0, 1000, 25,
					  "percent a move must win by" };
	static const struct knob prior = { "HK_VCPU_COST_US", 1, 1000000, 500,
					   "microseconds, a vCPU move until one is measured" };
	/* the "learned" policy */
	static const struct knob partner = { "HK_PARTNER_BOUNCES", 1, 1000000, 32,
					     "bounces of a program's page before its writers gather" };
	/* health thresholds: past one, the node evacuates itself (health.c) */
	static const struct knob ce = { "HK_HEALTH_MAX_CE", 1, 1000000000, 100,
					"corrected memory errors" };
	static const struct knob temp = { "HK_HEALTH_MAX_TEMP_C", 30, 150, 95, "degrees Celsius" };
	static const struct knob link = { "HK_HEALTH_MAX_LINK_ERRORS", 1, 1000000000, 100,
					  "interconnect errors" };
	uint64_t v;
	if (number(&ce, &t->health_max_ce) || number(&link, &t->health_max_link_errors) ||
	    number(&temp, &v))
		return -EINVAL;
	t->health_max_temp_c = (int32_t)v;
	if (number(&spin, &v))
		return -EINVAL;
	t->spin_cap_ns = v * 1000;
	if (number(&fault, &v))
		return -EINVAL;
	t->fault_spin_ns = t->spin_cap_ns ? v * 1000 : 0;
	if (number(&peer, &v))
		return -EINVAL;
	t->peer_spin_ns = t->spin_cap_ns ? v * 1000 : 0;
	t->serve_spin_set = getenv(fault.name) || getenv(peer.name);
	if (number(&ra, &v))
		return -EINVAL;
	t->readahead = (uint32_t)v;
	if (number(&ra_windows, &v))
		return -EINVAL;
	t->readahead_windows = (uint32_t)v;
	if (number(&refetch, &v))
		return -EINVAL;
	t->refetch = (uint32_t)v;
	if (number(&migratory, &v))
		return -EINVAL;
	t->migratory = v != 0;
	if (number(&cork, &v))
		return -EINVAL;
	t->cork = v != 0;
	if (number(&hold, &v))
		return -EINVAL;
	t->hold_down_ns = v * 1000;
	if (number(&hyst, &v))
		return -EINVAL;
	t->hysteresis_pct = (uint32_t)v;
	if (number(&prior, &v))
		return -EINVAL;
	t->vcpu_prior_ns = v * 1000;
	if (number(&partner, &v))
		return -EINVAL;
	t->partner_bounces = (uint32_t)v;
	if (number(&page_hold, &v))
		return -EINVAL;
	t->page_hold_ns = v * 1000;
	if (number(&read_hold, &v))
		return -EINVAL;
	t->read_hold_ns = v * 1000;
	if (number(&migratory_hold, &v))
		return -EINVAL;
	t->migratory_hold_ns = v * 1000;
	const char *s = getenv("HK_EVENT_SCHED");
	if (!s) {
		t->event_sched = event_rt ? HK_SCHED_FIFO : HK_SCHED_NORMAL;
	} else if (!strcmp(s, "fifo")) {
		t->event_sched = HK_SCHED_FIFO;
	} else if (!strcmp(s, "normal")) {
		t->event_sched = HK_SCHED_NORMAL;
	} else if (!strcmp(s, "auto")) {
		t->event_sched = HK_SCHED_AUTO;
	} else {
		hk_warn("HK_EVENT_SCHED=%s is not a scheduling class: use fifo, normal or auto", s);
		return -EINVAL;
	}
	return 0;
}

/*
 * sim_trace.c - a recorded fault trace (HK_FAULT_TRACE, src/trace.c) as the
 * simulation's workload: each vCPU of the trace becomes a thread that makes
 * the accesses its vCPU stalled on, in their order.  An access to a page
 * waits for the access another vCPU made to it just before in the trace (a
 * vCPU that spun on a word until another wrote it spins in the replay too),
 * then the vCPU runs as long as it did before that fault (its think time),
 * in virtual time.  Pages are numbered densely, grouped by their home, so
 * that each home's pages form one range.
 *
 * What a trace cannot say: the accesses that found their page already there
 * when it was recorded.  Under another placement some of them would stall,
 * and the replay misses those; so record under "page", which moves no vCPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

struct rec {
	uint64_t t0, wait, page, gt;
	int node, vcpu, home;
	bool write, user;
	int op;             /* its place among its vCPU's */
	struct rec *dep;    /* the other vCPU's access to the page just before */
};

static int by_home_page(const void *a, const void *b)
{
	const struct rec *x = *(struct rec *const *)a, *y = *(struct rec *const *)b;
	if (x->home != y->home)
		return x->home - y->home;
	return x->page < y->page ? -1 : x->page > y->page;
}

static int by_time(const void *a, const void *b)
{
	const struct rec *x = *(struct rec *const *)a, *y = *(struct rec *const *)b;
	if (x->t0 != y->t0)
		return x->t0 < y->t0 ? -1 : 1;
	return x->vcpu - y->vcpu;
}

static int fail(char *why, size_t len, const char *msg, const char *file, unsigned long line)
{
	snprintf(why, len, "%s:%lu: %s", file, line, msg);
	return -1;
}

static int load_file(const char *file, struct rec **recs, size_t *n, size_t *cap, int *nodes,
		     int *nvcpus, uint64_t after, uint64_t before, char *why, size_t len)
{
	FILE *f = fopen(file, "r");
	if (!f)
		return fail(why, len, "cannot open", file, 0);
	char line[256];
	unsigned long ln = 0;
	int node = -1;
	while (fgets(line, sizeof(line), f)) {
		ln++;
		int self, count;
		if (sscanf(line, "# hk fault trace 1 node=%d nodes=%d", &self, &count) == 2) {
			if (self < 0 || count < 1 || count > SIM_MAX_NODES || self >= count ||
			    (*nodes && *nodes != count)) {
				fclose(f);
				return fail(why, len, "a header this simulation cannot take", file, ln);
			}
			node = self;
			*nodes = count;
			continue;
		}
		int vcpus;
		if (sscanf(line, "# vcpus=%d", &vcpus) == 1) {
			if (vcpus < 1 || vcpus > SIM_MAX_THREADS) {
				fclose(f);
				return fail(why, len, "more vCPUs than the simulation takes", file, ln);
			}
			if (vcpus > *nvcpus)
				*nvcpus = vcpus;
			continue;
		}
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (node < 0) {
			fclose(f);
			return fail(why, len, "a record before the \"# hk fault trace 1\" header", file, ln);
		}
		struct rec r = { .node = node };
		char rw, mode;
		if (sscanf(line, "%lu %lu %d %lx %c %c %lx %d", &r.t0, &r.wait, &r.vcpu, &r.page, &rw,
			   &mode, &r.gt, &r.home) != 8 ||
		    (rw != 'r' && rw != 'w') || (mode != 'u' && mode != 'k') || r.vcpu >= SIM_MAX_THREADS ||
		    r.home < 0 || r.home >= *nodes) {
			fclose(f);
			return fail(why, len, "not a record (t0 wait vcpu page r|w u|k thread home)", file, ln);
		}
		if (r.vcpu < 0 || r.t0 < after || r.t0 > before)
			continue; /* device emulation, or outside the window */
		r.write = rw == 'w';
		r.user = mode == 'u';
		if (*n == *cap) {
			*cap = *cap ? 2 * *cap : 4096;
			*recs = realloc(*recs, *cap * sizeof(**recs));
			if (!*recs)
				abort();
		}
		(*recs)[(*n)++] = r;
	}
	fclose(f);
	return 0;
}

int sim_trace_load(struct sim_trace *t, char *const *files, int nfiles, uint64_t after,
		   uint64_t before, char *why, size_t len)
{
	struct rec *recs = NULL;
	size_t n = 0, cap = 0;
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < nfiles; i++)
		if (load_file(files[i], &recs, &n, &cap, &t->nodes, &t->vcpus, after, before, why,
			      len)) {
			free(recs);
			return -1;
		}
	if (!n) {
		snprintf(why, len, "no vCPU stalled in the trace (or in the window asked for)");
		free(recs);
		return -1;
	}
	/* dense page numbers, each home's pages together and in order */
	struct rec **order = malloc(n * sizeof(*order));
	if (!order)
		abort();
	for (size_t i = 0; i < n; i++)
		order[i] = &recs[i];
	qsort(order, n, sizeof(*order), by_home_page);
	uint64_t dense = 0, prev_page = 0;
	int prev_home = -1;
	for (size_t i = 0; i < n; i++) {
		struct rec *r = order[i];
		if (prev_home >= 0 && (r->page != prev_page || r->home != prev_home))
			dense++;
		if (r->home != prev_home)
			t->home_first[r->home] = dense;
		t->home_count[r->home] = dense + 1 - t->home_first[r->home];
		prev_page = r->page;
		prev_home = r->home;
		r->page = dense;
	}
	t->pages = dense + 1;
	if (t->pages > SIM_TRACE_MAX_PAGES) {
		snprintf(why, len, "the trace touches %lu pages; the simulation takes at most %d "
			 "(replay a window of it: --after/--before)", t->pages, SIM_TRACE_MAX_PAGES);
		free(order);
		free(recs);
		return -1;
	}
	/* Every stall in the order they began: each vCPU's in its own order,
	 * and each page's dependency the other vCPU's access just before. */
	qsort(order, n, sizeof(*order), by_time);
	struct rec **last = calloc(t->pages, sizeof(*last)), *prev[SIM_MAX_THREADS] = { 0 };
	if (!last)
		abort();
	uint64_t start = order[0]->t0;
	int count[SIM_MAX_THREADS] = { 0 };
	for (size_t i = 0; i < n; i++)
		count[order[i]->vcpu]++;
	for (size_t i = 0; i < n; i++) {
		struct rec *r = order[i], *l = last[r->page];
		int v = r->vcpu;
		r->dep = !l ? NULL : l->vcpu != v ? l : l->dep;
		last[r->page] = r;
		if (v + 1 > t->vcpus)
			t->vcpus = v + 1;
		if (!t->nops[v]) {
			t->ops[v] = calloc((size_t)count[v], sizeof(struct sim_op));
			if (!t->ops[v])
				abort();
			t->start_node[v] = r->node;
		}
		uint64_t free_at = prev[v] ? prev[v]->t0 + prev[v]->wait : start;
		if (r->dep && r->dep->t0 + r->dep->wait > free_at)
			free_at = r->dep->t0 + r->dep->wait;
		r->op = t->nops[v];
		t->ops[v][t->nops[v]++] = (struct sim_op){
			.page = r->page, .write = r->write, .user = r->user, .guest_thread = r->gt,
			.dep_vcpu = r->dep ? r->dep->vcpu : -1, .dep_op = r->dep ? r->dep->op : 0,
			.think_ns = r->t0 > free_at ? r->t0 - free_at : 0,
		};
		prev[v] = r;
		t->records++;
	}
	free(last);
	free(order);
	/* a vCPU that never stalled starts where vCPU k of N nodes would */
	for (int v = 0; v < t->vcpus; v++)
		if (!t->nops[v])
			t->start_node[v] = v * t->nodes / t->vcpus;
	free(recs);
	return 0;
}

/* node.c - the public API: a node's life (new, register, start, shutdown,
 * free) and the small queries.  Set-up of the mesh lives here; the protocol
 * lives in coherence.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hk.h"

void hk_config_init(struct hk_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->policy = "page";
	cfg->home_chunk_pages = 512;
	cfg->heartbeat_ms = 200;
	cfg->peer_timeout_ms = 3000;
	cfg->connect_timeout_ms = 10000;
	const char *e;
	/* Experiments shape links without recompiling the embedder. */
	if ((e = getenv("HK_LINK_LATENCY_US")))
		cfg->link_latency_us = (uint32_t)strtoul(e, NULL, 0);
	if ((e = getenv("HK_LINK_BANDWIDTH")))
		cfg->link_bandwidth = strtoull(e, NULL, 0);
	if ((e = getenv("HK_SPIN_US")))
		cfg->spin_us = (uint32_t)strtoul(e, NULL, 0);
}

int hk_node_new(const struct hk_config *cfg, struct hk_node **out)
{
	if (!cfg || !out || cfg->node_count < 1 || cfg->node_count > HK_MAX_NODES ||
	    cfg->node_id < 0 || cfg->node_id >= cfg->node_count || !cfg->secret ||
	    (cfg->node_count > 1 && !cfg->peers) || cfg->initial_nodes < 0 ||
	    cfg->initial_nodes > cfg->node_count)
		return -EINVAL;
	int initial = cfg->initial_nodes ? cfg->initial_nodes : cfg->node_count;
	/* a joiner takes a slot; the others start the cluster */
	if (cfg->join ? cfg->node_id < initial : cfg->node_id >= initial)
		return -EINVAL;
	struct hk_node *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->cfg = *cfg;
	if (!n->cfg.home_chunk_pages)
		n->cfg.home_chunk_pages = 1;
	if (!n->cfg.heartbeat_ms)
		n->cfg.heartbeat_ms = 200;
	if (!n->cfg.peer_timeout_ms)
		n->cfg.peer_timeout_ms = 3000;
	if (!n->cfg.connect_timeout_ms)
		n->cfg.connect_timeout_ms = 10000;
	int r = hk_policy_parse(cfg->policy, &n->policy);
	if (!r)
		r = hk_tuning_load(&n->tuning, cfg->event_realtime);
	if (r) {
		free(n);
		return r;
	}
	n->self = cfg->node_id;
	n->count = cfg->node_count;
	n->initial = initial;
	n->present = cfg->join ? hk_bit(n->self) : (initial >= 64 ? ~0ull : (1ull << initial) - 1);
	pthread_mutex_init(&n->join_lock, NULL);
	n->homes_chain = n->chain_to = -1;
	n->secret = strdup(cfg->secret);
	n->cfg.secret = n->secret;
	n->peers = calloc((size_t)n->count, sizeof(char *));
	for (int k = 0; k < n->count && cfg->peers; k++)
		n->peers[k] = strdup(cfg->peers[k]);
	n->cfg.peers = n->peers;
	n->budget_pages = cfg->budget_bytes / HK_PAGE_SIZE;
	n->skip_invalidate = getenv("HK_DEBUG_SKIP_INVALIDATE") &&
			     atoi(getenv("HK_DEBUG_SKIP_INVALIDATE")) > 0;
	n->evac_skip_freeze = getenv("HK_DEBUG_EVAC_SKIP_FREEZE") &&
			      atoi(getenv("HK_DEBUG_EVAC_SKIP_FREEZE")) > 0;
	n->rehome_skip_freeze = getenv("HK_DEBUG_REHOME_SKIP_FREEZE") &&
				atoi(getenv("HK_DEBUG_REHOME_SKIP_FREEZE")) > 0;
	n->skip_capacity_tick = getenv("HK_DEBUG_SKIP_CAPACITY_TICK") &&
				atoi(getenv("HK_DEBUG_SKIP_CAPACITY_TICK")) > 0;
	hk_cluster_init(&n->cluster);
	hk_evac_init(n);
	hk_health_init(n);
	pthread_mutex_init(&n->deferred_lock, NULL);
	n->listen_fd = -1;
	n->epfd = n->evfd = n->timerfd = n->holdfd = -1;
	for (int k = 0; k < HK_MAX_NODES; k++)
		n->links[k].fd = -1;
	n->learned = hk_learned_new();
	r = n->learned ? hk_memory_open(&n->mem) : -ENOMEM;
	if (r) {
		hk_node_free(n);
		return r;
	}
	char prefix[32];
	snprintf(prefix, sizeof(prefix), "hk node %d", n->self);
	hk_log_set_prefix(prefix);
	if ((r = hk_trace_open(n))) {
		hk_node_free(n);
		return r;
	}
	*out = n;
	return 0;
}

int64_t hk_region_register(struct hk_node *n, void *host, size_t len)
{
	if (n->started)
		return -EBUSY;
	uint64_t base = n->mem.npages * HK_PAGE_SIZE;
	int r = hk_memory_add_region(&n->mem, host, len);
	return r < 0 ? r : (int64_t)base;
}

int hk_region_set_home(struct hk_node *n, int64_t offset, size_t len, int home)
{
	if (n->started)
		return -EBUSY;
	if (offset < 0 || ((uint64_t)offset | len) & (HK_PAGE_SIZE - 1) || len == 0 ||
	    (uint64_t)offset / HK_PAGE_SIZE + len / HK_PAGE_SIZE > n->mem.npages || home < 0 ||
	    home >= n->initial)
		return -EINVAL;
	if (n->nhome_ranges == HK_MAX_REGIONS)
		return -ENOSPC;
	int i = n->nhome_ranges++;
	n->home_ranges[i].first_page = (uint64_t)offset / HK_PAGE_SIZE;
	n->home_ranges[i].npages = len / HK_PAGE_SIZE;
	n->home_ranges[i].home = home;
	return 0;
}

/* Node i accepts from higher ids and connects to lower ids: each pair gets
 * exactly one link, and there is no race over who dials whom. */
static int connect_mesh(struct hk_node *n)
{
	struct hk_handshake_cfg hc = hk_handshake_cfg_of(n);
	struct hk_shaper shape;
	hk_shaper_init(&shape, n->cfg.link_latency_us, n->cfg.link_bandwidth);
	char why[256];
	/* the nodes that start with us dial us now; joiners may, later */
	int expected_accepts = n->cfg.join ? 0 : n->initial - 1 - n->self;
	if (expected_accepts > 0 || n->self < n->count - 1) {
		n->listen_fd = hk_addr_listen(n->peers[n->self]);
		if (n->listen_fd < 0) {
			hk_warn("listen on %s: %s", n->peers[n->self], strerror(-n->listen_fd));
			return n->listen_fd;
		}
	}
	if (n->cfg.join)
		return hk_join_connect(n, &hc, &shape);
	for (int k = 0; k < n->self; k++) {
		int fd = hk_addr_connect(n->peers[k], n->cfg.connect_timeout_ms);
		if (fd < 0) {
			hk_warn("connect to node %d at %s: %s", k, n->peers[k], strerror(-fd));
			return fd;
		}
		int r = hk_handshake_connect(fd, &hc, k, why, sizeof(why));
		if (r < 0) {
			hk_warn("%s", why);
			close(fd);
			return r;
		}
		if ((r = hk_link_init(&n->links[k], fd, k, &shape, &n->stats)) < 0)
			return r;
	}
	uint64_t deadline = hk_now_ns() + (uint64_t)n->cfg.connect_timeout_ms * 1000000ull;
	while (expected_accepts > 0) {
		if (hk_now_ns() > deadline) {
			for (int k = n->self + 1; k < n->initial; k++)
				if (!n->links[k].up)
					hk_warn("node %d (%s) did not connect to us at %s within %u ms",
						k, n->peers[k], n->peers[n->self],
						n->cfg.connect_timeout_ms);
			hk_warn("timed out waiting for %d peer(s) to connect", expected_accepts);
			return -ETIMEDOUT;
		}
		struct timeval tv = { 0, 200000 };
		setsockopt(n->listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		int fd = hk_accept_link(n->listen_fd);
		if (fd < 0)
			continue;
		int peer = hk_handshake_accept(fd, &hc, why, sizeof(why));
		/* A refused stranger does not count: keep waiting for the real one. */
		if (peer < 0 || peer <= n->self || peer >= n->initial || n->links[peer].up) {
			hk_warn("refused a connection: %s", peer < 0 ? why : "duplicate or wrong peer");
			atomic_fetch_add(&n->stats.malformed, 1);
			close(fd);
			continue;
		}
		int r = hk_link_init(&n->links[peer], fd, peer, &shape, &n->stats);
		if (r < 0)
			return r;
		expected_accepts--;
	}
	return 0;
}

int hk_node_start(struct hk_node *n)
{
	if (n->started)
		return -EBUSY;
	if (n->mem.npages == 0)
		return -EINVAL;
	int r = hk_stats_init(&n->stats, n->mem.npages);
	if (r < 0)
		return r;
	if ((r = connect_mesh(n)) < 0)
		return r;
	if ((r = hk_coherence_init(n)) < 0)
		return r;
	/* hk_link_init ran before stats existed; point the links at them. */
	for (int k = 0; k < n->count; k++)
		n->links[k].stats = &n->stats;
	if (pthread_create(&n->thread, NULL, hk_coherence_thread, n) != 0)
		return -EAGAIN;
	n->started = true;
	return hk_join_acceptor_start(n);
}

void hk_node_shutdown(struct hk_node *n)
{
	if (!n || !n->started)
		return;
	for (int k = 0; k < n->count; k++) {
		if (k == n->self || !n->links[k].up)
			continue;
		struct hk_msg m = { .type = HK_MSG_BYE, .version = HK_PROTOCOL_VERSION };
		hk_link_send(&n->links[k], &m);
	}
	atomic_store(&n->stop, true);
	uint64_t one = 1;
	if (write(n->evfd, &one, sizeof(one)) < 0)
		hk_warn("wake event thread: %s", strerror(errno));
	pthread_join(n->thread, NULL);
	hk_join_acceptor_stop(n);
	n->started = false;
	for (int k = 0; k < n->count; k++)
		if (n->links[k].sender_started)
			hk_link_stop(&n->links[k]);
}

void hk_node_free(struct hk_node *n)
{
	if (!n)
		return;
	hk_node_shutdown(n); /* stops the acceptor too */
	for (int k = 0; k < n->count; k++) {
		if (n->links[k].sender_started)
			hk_link_stop(&n->links[k]);
		if (n->links[k].fd >= 0)
			close(n->links[k].fd);
		free(n->links[k].rbuf);
	}
	if (n->listen_fd >= 0)
		close(n->listen_fd);
	hk_coherence_destroy(n);
	hk_cluster_destroy(&n->cluster);
	hk_evac_destroy(n);
	hk_health_destroy(n);
	free(n->deferred);
	pthread_mutex_destroy(&n->deferred_lock);
	pthread_mutex_destroy(&n->join_lock);
	hk_memory_close(&n->mem);
	for (int k = 0; k < n->count && n->peers; k++)
		free((void *)n->peers[k]);
	free(n->peers);
	free(n->secret);
	hk_learned_free(n->learned);
	hk_trace_close(n);
	free(n);
}

int hk_thread_set_vcpu(struct hk_node *n, pid_t tid, int vcpu)
{
	if (!n || !n->started)
		return -EINVAL;
	hk_stats_set_vcpu(&n->stats, tid, vcpu);
	if (vcpu >= 0 && vcpu < HK_MAX_VCPUS)
		__atomic_store_n(&n->vcpu_tid[vcpu], tid, __ATOMIC_RELAXED);
	return 0;
}

static const char *const evac_phase_names[] = {
	[HK_EVAC_NONE] = "none",     [HK_EVAC_VCPUS] = "vcpus", [HK_EVAC_PAGES] = "pages",
	[HK_EVAC_FREEZE] = "freeze", [HK_EVAC_DRAIN] = "drain", [HK_EVAC_DONE] = "done",
	[HK_EVAC_REFUSED] = "refused",
};

/* The latest evacuation, this node's health and every peer's score (-1:
 * not heard yet, or itself) as JSON members. */
static char *evac_health_json(struct hk_node *n)
{
	struct hk_evac_status st;
	struct hk_health h;
	uint32_t score;
	hk_evac_status_get(n, &st);
	hk_health_get(n, &h, &score);
	char reason[sizeof(st.reason)];
	size_t j = 0;
	for (size_t i = 0; st.reason[i] && j + 1 < sizeof(reason); i++)
		if (st.reason[i] != '"' && st.reason[i] != '\\' && (unsigned char)st.reason[i] >= 32)
			reason[j++] = st.reason[i];
	reason[j] = 0;
	uint64_t end = st.finished_ns ? st.finished_ns : hk_now_ns();
	char peers[HK_MAX_NODES * 5 + 2] = "";
	size_t off = 0;
	for (int k = 0; k < n->count; k++)
		off += (size_t)snprintf(peers + off, sizeof(peers) - off, "%s%d", k ? "," : "",
					k == n->self || !n->links[k].up ? -1 : (int)n->links[k].health);
	/* chunks each node is home for, as our map says */
	uint32_t chunks[HK_MAX_NODES] = { 0 };
	for (uint64_t c = 0; n->home_map && c < n->nchunks; c++)
		if (n->home_map[c] >= 0 && n->home_map[c] < HK_MAX_NODES)
			chunks[(int)n->home_map[c]]++;
	char homes[HK_MAX_NODES * 11 + 2] = "";
	size_t hoff = 0;
	for (int k = 0; k < n->count; k++)
		hoff += (size_t)snprintf(homes + hoff, sizeof(homes) - hoff, "%s%u", k ? "," : "",
					 chunks[k]);
	char temp[16] = "null";
	if (h.temp_c != INT32_MIN)
		snprintf(temp, sizeof(temp), "%d", h.temp_c);
	char *out = NULL;
	if (asprintf(&out,
		     "\"evacuation\":{\"node\":%d,\"phase\":\"%s\",\"reason\":\"%s\",\"vcpus\":%u,"
		     "\"pages_pushed\":%lu,\"copies_dropped\":%lu,\"zero_pages\":%lu,"
		     "\"homes_moved\":%lu,\"bytes\":%lu,\"pages_left\":%lu,\"pages_taken\":%lu,"
		     "\"seconds\":%.3f},"
		     "\"gone_nodes\":%lu,\"present_nodes\":%lu,\"home_chunks\":[%s],"
		     "\"homes_given\":%lu,\"rehoming\":%s,"
		     "\"health\":{\"score\":%u,\"corrected_errors\":%lu,\"temp_c\":%s,"
		     "\"link_errors\":%lu,\"peer_scores\":[%s]}",
		     st.node, evac_phase_names[st.phase], reason, st.vcpus_moved, st.pages_pushed,
		     st.copies_dropped, st.zero_pages, st.homes_moved, st.bytes, st.pages_left,
		     st.pages_taken, st.started_ns ? (double)(end - st.started_ns) / 1e9 : 0.0,
		     __atomic_load_n(&n->evac.gone, __ATOMIC_RELAXED),
		     __atomic_load_n(&n->present, __ATOMIC_RELAXED), homes,
		     __atomic_load_n(&n->evac.homes_given, __ATOMIC_RELAXED),
		     hk_evac_rehoming(n) || __atomic_load_n(&n->homes_chain, __ATOMIC_RELAXED) >= 0
			     ? "true" : "false",
		     score, h.corrected_errors, temp,
		     h.link_errors, peers) < 0)
		return NULL;
	return out;
}

char *hk_stats_json(struct hk_node *n)
{
	char *s = hk_stats_to_json(&n->stats, n->self, n->resident, n->peak_resident, n->budget_pages,
				   hk_policy_name(n->policy));
	/* more members: what "learned" learned, evacuation and health */
	char *l = n->policy == HK_POLICY_LEARNED ? hk_learned_json(n) : NULL;
	char *e = evac_health_json(n);
	size_t len = s ? strlen(s) : 0;
	if (len && s[len - 1] == '}') {
		char *all = NULL;
		if (asprintf(&all, "%.*s%s%s%s%s%s}", (int)(len - 1), s, l ? ",\"learned\":" : "",
			     l ? l : "", e ? "," : "", e ? e : "", "") >= 0) {
			free(s);
			s = all;
		}
	}
	free(l);
	free(e);
	return s;
}

int hk_node_id(const struct hk_node *n)
{
	return n->self;
}

int hk_page_home(const struct hk_node *n, uint64_t offset)
{
	return hk_home_of((struct hk_node *)n, offset / HK_PAGE_SIZE);
}

bool hk_node_failed(const struct hk_node *n)
{
	return atomic_load(&n->failed);
}

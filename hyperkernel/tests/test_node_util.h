/* test_node_util.h - start small clusters for the multi-node tests. */
#ifndef TEST_NODE_UTIL_H
#define TEST_NODE_UTIL_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hyperkernel.h"

static char tn_dir[64];
static char tn_addr[HK_MAX_NODES][128];
static const char *tn_peers[HK_MAX_NODES];

static void tn_init_dir(int count)
{
	snprintf(tn_dir, sizeof(tn_dir), "/tmp/hk-test.XXXXXX");
	if (!mkdtemp(tn_dir))
		abort();
	for (int k = 0; k < count; k++) {
		snprintf(tn_addr[k], sizeof(tn_addr[k]), "unix:%s/n%d.sock", tn_dir, k);
		tn_peers[k] = tn_addr[k];
	}
}

static void tn_config(struct hk_config *c, int id, int count, const char *secret)
{
	hk_config_init(c);
	c->node_id = id;
	c->node_count = count;
	c->peers = tn_peers;
	c->secret = secret;
	c->home_chunk_pages = 1;
	c->connect_timeout_ms = 3000;
}

static uint8_t *tn_region(size_t pages)
{
	void *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* A node-level counter: the first occurrence in hk_stats_json() output. */
static __attribute__((unused)) long tn_counter(const char *js, const char *name)
{
	char key[64];
	snprintf(key, sizeof(key), "\"%s\":", name);
	const char *p = js ? strstr(js, key) : NULL;
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

struct tn_starter {
	pthread_t th;
	struct hk_node *node;
	int result;
};

static __attribute__((unused)) void *tn_start_main(void *arg)
{
	struct tn_starter *s = arg;
	s->result = hk_node_start(s->node);
	return NULL;
}
#endif

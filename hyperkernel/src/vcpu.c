/* vcpu.c - carrying opaque vCPU-state blobs between nodes.  The library does
 * not interpret them: the embedder serialises the architectural state and
 * loads it on the other side (on_vcpu_receive). */
#include <string.h>

#include "hk.h"

int hk_vcpu_send(struct hk_node *n, int target, uint32_t vcpu_id, const void *blob, size_t len)
{
	if (!n || target < 0 || target >= n->count || target == n->self)
		return -EINVAL;
	if (len > HK_VCPU_BLOB_MAX || (len && !blob))
		return -EMSGSIZE;
	if (!n->links[target].up)
		return -ENOTCONN;
	struct hk_msg m = { .type = HK_MSG_VCPU, .version = HK_PROTOCOL_VERSION,
			    .count = vcpu_id, .data = blob, .data_len = (uint32_t)len };
	int r = hk_link_send(&n->links[target], &m);
	if (r == 0)
		__atomic_fetch_add(&n->stats.node.vcpu_blobs_sent, 1, __ATOMIC_RELAXED);
	return r;
}

void hk_vcpu_deliver(struct hk_node *n, int from, const struct hk_msg *m)
{
	__atomic_fetch_add(&n->stats.node.vcpu_blobs_received, 1, __ATOMIC_RELAXED);
	if (n->cfg.cb.on_vcpu_receive)
		n->cfg.cb.on_vcpu_receive(n->cfg.cb.opaque, from, m->count, m->data, m->data_len);
	else
		hk_warn("vcpu %u state from node %d dropped: no on_vcpu_receive handler", m->count,
			from);
}

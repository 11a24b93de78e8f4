/* vcpu.c - carrying opaque vCPU-state blobs between nodes.  The library does
 * not interpret them: the embedder serialises the architectural state and
 * loads it on the other side (on_vcpu_receive).  Each move updates the vCPU
 * location directory (cluster.c): the move count and the node the vCPU
 * returns to after an I/O visit travel with the blob. */
#include <string.h>

#include "hk.h"

int hk_vcpu_send(struct hk_node *n, int target, uint32_t vcpu_id, const void *blob, size_t len)
{
	if (!n || target < 0 || target >= n->count || target == n->self)
		return -EINVAL;
	if (len > HK_VCPU_BLOB_MAX || (len && !blob))
		return -EMSGSIZE;
	if (vcpu_id >= HK_MAX_VCPUS)
		return -EINVAL;
	if (!n->links[target].up) {
		hk_cluster_vcpu_stayed(n, vcpu_id, target);
		return -ENOTCONN;
	}
	if (hk_node_leaving(n, target) || !hk_node_member(n, target)) {
		hk_cluster_vcpu_stayed(n, vcpu_id, target);
		return -EHOSTDOWN; /* it is evacuating, left, or still joining */
	}
	int home;
	uint64_t seq = hk_cluster_vcpu_leaving(n, vcpu_id, target, &home);
	struct hk_msg m = { .type = HK_MSG_VCPU, .version = HK_PROTOCOL_VERSION, .vcpu = vcpu_id,
			    .node = (uint32_t)home, .a = seq, .data = blob, .data_len = (uint32_t)len };
	int r = hk_link_send(&n->links[target], &m);
	if (r == 0)
		__atomic_fetch_add(&n->stats.node.vcpu_blobs_sent, 1, __ATOMIC_RELAXED);
	else
		hk_cluster_vcpu_stayed(n, vcpu_id, target);
	return r;
}

void hk_vcpu_deliver(struct hk_node *n, int from, const struct hk_msg *m)
{
	__atomic_fetch_add(&n->stats.node.vcpu_blobs_received, 1, __ATOMIC_RELAXED);
	int home = (int)m->node < n->count ? (int)m->node : n->self;
	/* The directory first: an interrupt or a migration request for it
	 * that arrives from now on is for this node. */
	hk_cluster_vcpu_arrived(n, m->vcpu, m->a, home);
	if (n->cfg.cb.on_vcpu_receive)
		n->cfg.cb.on_vcpu_receive(n->cfg.cb.opaque, from, m->vcpu, m->data, m->data_len);
	else
		hk_warn("vcpu %u state from node %d dropped: no on_vcpu_receive handler", m->vcpu,
			from);
	hk_cluster_rebalance(n, (int)m->vcpu, from);
}

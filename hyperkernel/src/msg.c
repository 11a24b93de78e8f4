/* msg.c - the wire format: a 16-byte header (magic, version, type, flags,
 * payload length, sequence) and one fixed payload layout per type, all
 * little-endian.  hk_msg_decode() is the fuzz target's entry: it validates
 * every field before anything else looks at the frame. */
#include <string.h>

#include "hk.h"

static const char *const type_names[HK_MSG_TYPE_COUNT] = {
	[0] = "invalid",
	[HK_MSG_HELLO] = "hello",
	[HK_MSG_HELLO_ACK] = "hello_ack",
	[HK_MSG_AUTH] = "auth",
	[HK_MSG_AUTH_OK] = "auth_ok",
	[HK_MSG_REFUSE] = "refuse",
	[HK_MSG_REQ] = "req",
	[HK_MSG_FWD] = "fwd",
	[HK_MSG_DATA] = "data",
	[HK_MSG_GRANT] = "grant",
	[HK_MSG_INV] = "inv",
	[HK_MSG_INV_ACK] = "inv_ack",
	[HK_MSG_XFER_ACK] = "xfer_ack",
	[HK_MSG_XFER_DROPPED] = "xfer_dropped",
	[HK_MSG_DONE] = "done",
	[HK_MSG_EVICT] = "evict",
	[HK_MSG_XFER_REFUSED] = "xfer_refused",
	[HK_MSG_DROP_REQ] = "drop_req",
	[HK_MSG_DROP_OK] = "drop_ok",
	[HK_MSG_PEER_LOST] = "peer_lost",
	[HK_MSG_HEARTBEAT] = "heartbeat",
	[HK_MSG_BYE] = "bye",
	[HK_MSG_VCPU] = "vcpu",
	[HK_MSG_CONFIG] = "config",
	[HK_MSG_VCPU_AT] = "vcpu_at",
	[HK_MSG_IRQ] = "irq",
	[HK_MSG_APIC_ADDR] = "apic_addr",
	[HK_MSG_EOI] = "eoi",
	[HK_MSG_SHUTDOWN] = "shutdown",
	[HK_MSG_STOPPED] = "stopped",
	[HK_MSG_MIGRATE] = "migrate",
	[HK_MSG_EVAC] = "evac",
	[HK_MSG_EVAC_ACK] = "evac_ack",
	[HK_MSG_HOME_ENTRY] = "home_entry",
	[HK_MSG_MEMBERS] = "members",
	[HK_MSG_HOME_MAP] = "home_map",
};

const char *hk_msg_type_name(unsigned type)
{
	return type < HK_MSG_TYPE_COUNT ? type_names[type] : "unknown";
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

#define PAGE_PAYLOAD 12u
#define VCPU_HDR 16u /* vcpu, home, seq */

static bool is_page_msg(unsigned t)
{
	return t >= HK_MSG_REQ && t <= HK_MSG_PEER_LOST;
}

/* Exact payload length for fixed types; VCPU is checked separately. */
static long fixed_len(unsigned t)
{
	switch (t) {
	case HK_MSG_HELLO: return 4 + HK_NONCE_LEN;
	case HK_MSG_HELLO_ACK: return 4 + HK_NONCE_LEN + HK_SHA256_LEN;
	case HK_MSG_AUTH: return HK_SHA256_LEN;
	case HK_MSG_AUTH_OK: return 0;
	case HK_MSG_REFUSE: return 4;
	case HK_MSG_DATA: return PAGE_PAYLOAD + HK_PAGE_SIZE;
	case HK_MSG_HEARTBEAT: return 36;
	case HK_MSG_BYE: return 0;
	case HK_MSG_CONFIG: return HK_SHA256_LEN + 4 + 8 + 8 + 8 + 4;
	case HK_MSG_VCPU_AT: return 4 + 4 + 8 + 4;
	case HK_MSG_IRQ: return 4 + 12;
	case HK_MSG_APIC_ADDR: return 4 + 12 + 8;
	case HK_MSG_EOI: return 4;
	case HK_MSG_SHUTDOWN: return 0;
	case HK_MSG_STOPPED: return 0;
	case HK_MSG_MIGRATE: return 4 + 4 + 4;
	case HK_MSG_EVAC: return 4 + 4 + 8 + 4 + 4;
	case HK_MSG_EVAC_ACK: return 4 + 4 + 4;
	case HK_MSG_HOME_ENTRY: return 8 + 4 + 8;
	case HK_MSG_MEMBERS: return 8 + 8 + 4;
	case HK_MSG_HOME_MAP: return 8 + 4 + HK_HOME_MAP_PER_MSG;
	default: return is_page_msg(t) ? (long)PAGE_PAYLOAD : -1;
	}
}

size_t hk_msg_payload_len(const struct hk_msg *m)
{
	if (m->type == HK_MSG_VCPU)
		return VCPU_HDR + m->data_len;
	long l = fixed_len(m->type);
	return l < 0 ? 0 : (size_t)l;
}

size_t hk_msg_encode(const struct hk_msg *m, uint8_t *buf, size_t cap)
{
	size_t plen = hk_msg_payload_len(m);
	if (cap < HK_MSG_HDR_LEN + plen)
		return 0;
	uint8_t *p = buf + HK_MSG_HDR_LEN;
	put32(buf, HK_MSG_MAGIC);
	put16(buf + 4, m->version ? m->version : HK_PROTOCOL_VERSION);
	buf[6] = m->type;
	buf[7] = m->flags;
	put32(buf + 8, (uint32_t)plen);
	put32(buf + 12, m->seq);
	switch (m->type) {
	case HK_MSG_HELLO:
		put16(p, (uint16_t)m->node);
		put16(p + 2, (uint16_t)m->count);
		memcpy(p + 4, m->nonce, HK_NONCE_LEN);
		break;
	case HK_MSG_HELLO_ACK:
		put16(p, (uint16_t)m->node);
		put16(p + 2, (uint16_t)m->count);
		memcpy(p + 4, m->nonce, HK_NONCE_LEN);
		memcpy(p + 4 + HK_NONCE_LEN, m->mac, HK_SHA256_LEN);
		break;
	case HK_MSG_AUTH:
		memcpy(p, m->mac, HK_SHA256_LEN);
		break;
	case HK_MSG_REFUSE:
		put16(p, m->reason);
		put16(p + 2, (uint16_t)m->count);
		break;
	case HK_MSG_HEARTBEAT:
		put64(p, m->a);
		put64(p + 8, m->b);
		put32(p + 16, (uint32_t)m->arg[0]); /* busy, % of one CPU */
		put32(p + 20, (uint32_t)m->arg[1]); /* host CPUs */
		put32(p + 24, (uint32_t)m->arg[2]); /* health score */
		put64(p + 28, m->page);             /* the vCPUs that keep running */
		break;
	case HK_MSG_EVAC:
	case HK_MSG_EVAC_ACK:
		put32(p, m->node);
		put32(p + 4, m->mode);
		if (m->type == HK_MSG_EVAC) {
			put64(p + 8, m->a);
			put32(p + 16, m->count); /* rehome: the share */
			put32(p + 20, m->vcpu);  /* the round: a retried rehome's acks are new */
		} else {
			put32(p + 8, m->vcpu);
		}
		break;
	case HK_MSG_HOME_ENTRY:
		put64(p, m->page);
		put32(p + 8, m->node);
		put64(p + 12, m->a);
		break;
	case HK_MSG_MEMBERS:
		put64(p, m->a);
		put64(p + 8, m->b);
		put32(p + 16, m->count);
		break;
	case HK_MSG_HOME_MAP:
		put64(p, m->page);
		put32(p + 8, m->count);
		memcpy(p + 12, m->mac, HK_HOME_MAP_PER_MSG);
		break;
	case HK_MSG_VCPU:
		put32(p, m->vcpu);
		put32(p + 4, m->node);
		put64(p + 8, m->a);
		if (m->data_len)
			memcpy(p + VCPU_HDR, m->data, m->data_len);
		break;
	case HK_MSG_CONFIG:
		memcpy(p, m->mac, HK_SHA256_LEN);
		put32(p + 32, m->count);
		put64(p + 36, m->a);
		put64(p + 44, m->b);
		put64(p + 52, m->page);
		put32(p + 60, (uint32_t)m->arg[0]); /* the node's CPUs */
		break;
	case HK_MSG_VCPU_AT:
		put32(p, m->vcpu);
		put32(p + 4, m->node);
		put64(p + 8, m->a);
		put32(p + 16, (uint32_t)m->arg[0]); /* its home */
		break;
	case HK_MSG_IRQ:
	case HK_MSG_APIC_ADDR:
		put32(p, m->vcpu);
		for (int i = 0; i < 3; i++)
			put32(p + 4 + 4 * i, (uint32_t)m->arg[i]);
		if (m->type == HK_MSG_APIC_ADDR)
			put64(p + 16, m->a);
		break;
	case HK_MSG_EOI:
		put32(p, (uint32_t)m->arg[0]);
		break;
	case HK_MSG_MIGRATE:
		put32(p, m->vcpu);
		put32(p + 4, m->node);
		put32(p + 8, m->count);
		break;
	case HK_MSG_SHUTDOWN:
	case HK_MSG_STOPPED:
		break;
	default:
		if (is_page_msg(m->type)) {
			put64(p, m->page);
			put16(p + 8, (uint16_t)m->node);
			p[10] = m->mode;
			p[11] = m->aux;
			if (m->type == HK_MSG_DATA)
				memcpy(p + PAGE_PAYLOAD, m->data, HK_PAGE_SIZE);
		}
		break;
	}
	return HK_MSG_HDR_LEN + plen;
}

long hk_msg_frame_len(const uint8_t *buf, size_t len)
{
	if (len < HK_MSG_HDR_LEN || get32(buf) != HK_MSG_MAGIC)
		return -EBADMSG;
	uint32_t plen = get32(buf + 8);
	if (plen > HK_MSG_MAX_PAYLOAD)
		return -EMSGSIZE;
	return (long)(HK_MSG_HDR_LEN + plen);
}

int hk_msg_decode(const uint8_t *buf, size_t len, struct hk_msg *m)
{
	memset(m, 0, sizeof(*m));
	if (len < HK_MSG_HDR_LEN) {
		/* Reject a bad magic as soon as it is visible, not after a
		 * garbage peer has made us wait for a whole header. */
		uint8_t magic[4];
		put32(magic, HK_MSG_MAGIC);
		return memcmp(buf, magic, len < 4 ? len : 4) ? -EBADMSG : 0;
	}
	if (get32(buf) != HK_MSG_MAGIC)
		return -EBADMSG;
	m->version = get16(buf + 4);
	m->type = buf[6];
	m->flags = buf[7];
	uint32_t plen = get32(buf + 8);
	m->seq = get32(buf + 12);
	if (m->version != HK_PROTOCOL_VERSION)
		return -EPROTO;
	if (m->type == 0 || m->type >= HK_MSG_TYPE_COUNT)
		return -EBADMSG;
	if (m->flags != 0)
		return -EBADMSG;
	if (m->type == HK_MSG_VCPU) {
		if (plen < VCPU_HDR || plen > VCPU_HDR + HK_VCPU_BLOB_MAX)
			return -EMSGSIZE;
	} else if ((long)plen != fixed_len(m->type)) {
		return -EMSGSIZE;
	}
	if (len < HK_MSG_HDR_LEN + (size_t)plen)
		return 0;
	const uint8_t *p = buf + HK_MSG_HDR_LEN;
	switch (m->type) {
	case HK_MSG_HELLO:
	case HK_MSG_HELLO_ACK:
		m->node = get16(p);
		m->count = get16(p + 2);
		if (m->node >= HK_MAX_NODES || m->count == 0 || m->count > HK_MAX_NODES ||
		    m->node >= m->count)
			return -EBADMSG;
		memcpy(m->nonce, p + 4, HK_NONCE_LEN);
		if (m->type == HK_MSG_HELLO_ACK)
			memcpy(m->mac, p + 4 + HK_NONCE_LEN, HK_SHA256_LEN);
		break;
	case HK_MSG_AUTH:
		memcpy(m->mac, p, HK_SHA256_LEN);
		break;
	case HK_MSG_REFUSE:
		m->reason = get16(p);
		m->count = get16(p + 2);
		if (m->reason < HK_REFUSE_VERSION || m->reason > HK_REFUSE_BUSY)
			return -EBADMSG;
		break;
	case HK_MSG_HEARTBEAT:
		m->a = get64(p);
		m->b = get64(p + 8);
		m->arg[0] = (int32_t)get32(p + 16);
		m->arg[1] = (int32_t)get32(p + 20);
		m->arg[2] = (int32_t)get32(p + 24);
		m->page = get64(p + 28);
		if (m->arg[0] < 0 || m->arg[1] < 0 || m->arg[1] > 4096 || m->arg[2] < 0 ||
		    m->arg[2] > 100)
			return -EBADMSG;
		break;
	case HK_MSG_EVAC:
	case HK_MSG_EVAC_ACK:
		m->node = get32(p);
		m->mode = (uint8_t)get32(p + 4);
		if (m->node >= HK_MAX_NODES || get32(p + 4) < HK_EVAC_STEP_START ||
		    get32(p + 4) > HK_EVAC_STEP_ABORT)
			return -EBADMSG;
		m->vcpu = get32(p + (m->type == HK_MSG_EVAC ? 20 : 8));
		if (m->type == HK_MSG_EVAC) {
			m->a = get64(p + 8);
			m->count = get32(p + 16);
			if (m->a == 0 || (m->a & (1ull << m->node)))
				return -EBADMSG; /* no node to take it, or itself */
			/* a rehome goes to one node, a share of at least half */
			if (m->mode == HK_EVAC_STEP_REHOME &&
			    (__builtin_popcountll(m->a) != 1 || m->count < 2 || m->count > 64))
				return -EBADMSG;
		} else if (get32(p + 4) != HK_EVAC_STEP_FREEZE) {
			return -EBADMSG; /* only a freeze is acknowledged */
		}
		break;
	case HK_MSG_HOME_ENTRY:
		m->page = get64(p);
		m->node = get32(p + 8);
		m->a = get64(p + 12);
		if (m->node >= HK_MAX_NODES || !(m->a & (1ull << m->node)))
			return -EBADMSG; /* the owner holds a copy */
		break;
	case HK_MSG_MEMBERS:
		m->a = get64(p);     /* the nodes in the cluster now */
		m->b = get64(p + 8); /* the nodes that left */
		m->count = get32(p + 16); /* the nodes it started with */
		if (!m->a || (m->a & m->b) || m->count == 0 || m->count > HK_MAX_NODES)
			return -EBADMSG;
		break;
	case HK_MSG_HOME_MAP:
		m->page = get64(p);       /* the first chunk */
		m->count = get32(p + 8);  /* how many follow */
		memcpy(m->mac, p + 12, HK_HOME_MAP_PER_MSG);
		if (m->count == 0 || m->count > HK_HOME_MAP_PER_MSG)
			return -EBADMSG;
		for (uint32_t i = 0; i < m->count; i++)
			if (m->mac[i] >= HK_MAX_NODES)
				return -EBADMSG;
		break;
	case HK_MSG_VCPU:
		m->vcpu = get32(p);
		m->node = get32(p + 4); /* the node it returns to after an I/O visit */
		m->a = get64(p + 8);    /* its move count */
		if (m->vcpu >= HK_MAX_VCPUS || m->node >= HK_MAX_NODES)
			return -EBADMSG;
		m->data = p + VCPU_HDR;
		m->data_len = plen - VCPU_HDR;
		break;
	case HK_MSG_CONFIG:
		memcpy(m->mac, p, HK_SHA256_LEN);
		m->count = get32(p + 32);
		m->a = get64(p + 36);
		m->b = get64(p + 44);
		m->page = get64(p + 52);
		m->arg[0] = (int32_t)get32(p + 60);
		if (m->count == 0 || m->count > HK_MAX_VCPUS || m->page == 0 ||
		    m->page % HK_PAGE_SIZE || m->arg[0] < 1 || m->arg[0] > HK_MAX_VCPUS)
			return -EBADMSG;
		break;
	case HK_MSG_VCPU_AT:
		m->vcpu = get32(p);
		m->node = get32(p + 4);
		m->a = get64(p + 8);
		m->arg[0] = (int32_t)get32(p + 16);
		if (m->vcpu >= HK_MAX_VCPUS || m->node >= HK_MAX_NODES || m->arg[0] < 0 ||
		    m->arg[0] >= HK_MAX_NODES)
			return -EBADMSG;
		break;
	case HK_MSG_IRQ:
	case HK_MSG_APIC_ADDR:
		m->vcpu = get32(p);
		for (int i = 0; i < 3; i++)
			m->arg[i] = (int32_t)get32(p + 4 + 4 * i);
		if (m->vcpu >= HK_MAX_VCPUS)
			return -EBADMSG;
		if (m->type == HK_MSG_IRQ) {
			/* LAPIC delivery mode (3 bits), vector, trigger mode (1 bit) */
			if (m->arg[0] < 0 || m->arg[0] > 7 || m->arg[1] < 0 || m->arg[1] > 255 ||
			    m->arg[2] < 0 || m->arg[2] > 1)
				return -EBADMSG;
		} else {
			m->a = get64(p + 16);
			/* destination format: 0xf flat, 0 cluster (top nibble) */
			if (m->arg[2] < 0 || m->arg[2] > 15)
				return -EBADMSG;
		}
		break;
	case HK_MSG_EOI:
		m->arg[0] = (int32_t)get32(p);
		if (m->arg[0] < 0 || m->arg[0] > 255)
			return -EBADMSG;
		break;
	case HK_MSG_MIGRATE:
		m->vcpu = get32(p);
		m->node = get32(p + 4);
		m->count = get32(p + 8);
		if (m->vcpu >= HK_MAX_VCPUS || m->node >= HK_MAX_NODES || m->count > HK_MAX_NODES)
			return -EBADMSG;
		break;
	case HK_MSG_AUTH_OK:
	case HK_MSG_BYE:
	case HK_MSG_SHUTDOWN:
	case HK_MSG_STOPPED:
		break;
	default:
		m->page = get64(p);
		m->node = get16(p + 8);
		m->mode = p[10];
		m->aux = p[11];
		if (m->node >= HK_MAX_NODES ||
		    m->aux > (m->type == HK_MSG_DROP_OK || m->type == HK_MSG_DATA ||
					      m->type == HK_MSG_REQ ? 2 : 1))
			return -EBADMSG;
		/* only a request for writing is a migratory read */
		if (m->type == HK_MSG_REQ && m->aux == HK_REQ_MIGRATORY && m->mode != HK_MODE_EXCL)
			return -EBADMSG;
		/* only a page given for writing comes dropped */
		if (m->type == HK_MSG_DATA && m->aux == HK_DATA_DROPPED && m->mode != HK_MODE_EXCL)
			return -EBADMSG;
		if ((m->type == HK_MSG_REQ || m->type == HK_MSG_FWD || m->type == HK_MSG_DATA ||
		     m->type == HK_MSG_GRANT) &&
		    m->mode != HK_MODE_SHARED && m->mode != HK_MODE_EXCL)
			return -EBADMSG;
		if (m->type == HK_MSG_DATA) {
			m->data = p + PAGE_PAYLOAD;
			m->data_len = HK_PAGE_SIZE;
		}
		break;
	}
	return (int)(HK_MSG_HDR_LEN + plen);
}

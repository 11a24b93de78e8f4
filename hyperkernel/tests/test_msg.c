/* test_msg.c - every message type survives encode/decode; truncated,
 * oversized, unknown and corrupted frames are rejected without reading past
 * the input. */
#include <string.h>

#include "hk.h"
#include "hk_test.h"

static void test_roundtrip_all_types(void)
{
	uint8_t page[HK_PAGE_SIZE], buf[HK_MSG_HDR_LEN + HK_MSG_MAX_PAYLOAD];
	for (int i = 0; i < (int)HK_PAGE_SIZE; i++)
		page[i] = (uint8_t)(i * 7);
	for (unsigned t = 1; t < HK_MSG_TYPE_COUNT; t++) {
		struct hk_msg m = { .type = (uint8_t)t, .seq = 77, .page = 123456789, .node = 3,
				    .count = 4, .mode = HK_MODE_EXCL, .aux = 1,
				    .reason = HK_REFUSE_SECRET, .a = 11, .b = 22, .vcpu = 5,
				    .arg = { 1, 0x31, 1 } };
		if (t == HK_MSG_CONFIG)
			m.page = 1u << 20; /* guest RAM: whole pages */
		if (t == HK_MSG_EVAC)
			m.a = 0x5; /* the nodes taking over: not the leaver (3) */
		memset(m.nonce, 0x5a, sizeof(m.nonce));
		memset(m.mac, 0xa5, sizeof(m.mac));
		if (t == HK_MSG_MEMBERS)
			m.b = 0x30; /* left: not among the present (11) */
		if (t == HK_MSG_HOME_MAP)
			for (int i = 0; i < (int)HK_HOME_MAP_PER_MSG; i++)
				m.mac[i] = (uint8_t)(i % 3); /* node ids */
		if (t == HK_MSG_DATA || t == HK_MSG_VCPU) {
			m.data = page;
			m.data_len = t == HK_MSG_DATA ? HK_PAGE_SIZE : 1000;
		}
		size_t n = hk_msg_encode(&m, buf, sizeof(buf));
		CHECK(n >= HK_MSG_HDR_LEN);
		struct hk_msg d;
		CHECK(hk_msg_decode(buf, n, &d) == (int)n);
		CHECK(d.type == t && d.seq == 77);
		/* every proper prefix asks for more input */
		struct hk_msg part;
		for (size_t cut = 0; cut < n; cut += 97)
			CHECK(hk_msg_decode(buf, cut, &part) == 0);
		if (t >= HK_MSG_REQ && t <= HK_MSG_PEER_LOST) {
			CHECK(d.page == 123456789 && d.node == 3);
		}
		if (t == HK_MSG_DATA)
			CHECK(d.data_len == HK_PAGE_SIZE && !memcmp(d.data, page, HK_PAGE_SIZE));
		if (t == HK_MSG_VCPU)
			CHECK(d.vcpu == 5 && d.node == 3 && d.a == 11 && d.data_len == 1000 &&
			      !memcmp(d.data, page, 1000));
		if (t == HK_MSG_CONFIG)
			CHECK(d.mac[31] == 0xa5 && d.count == 4 && d.a == 11 && d.b == 22 &&
			      d.page == 1u << 20 && d.arg[0] == 1);
		if (t == HK_MSG_IRQ)
			CHECK(d.vcpu == 5 && d.arg[0] == 1 && d.arg[1] == 0x31 && d.arg[2] == 1);
		if (t == HK_MSG_APIC_ADDR)
			CHECK(d.vcpu == 5 && d.arg[1] == 0x31 && d.a == 11);
		if (t == HK_MSG_VCPU_AT)
			CHECK(d.vcpu == 5 && d.node == 3 && d.a == 11);
		if (t == HK_MSG_MIGRATE)
			CHECK(d.vcpu == 5 && d.node == 3 && d.count == 4);
		if (t == HK_MSG_EOI)
			CHECK(d.arg[0] == 1);
		if (t == HK_MSG_HELLO_ACK)
			CHECK(d.mac[0] == 0xa5 && d.nonce[31] == 0x5a);
		if (t == HK_MSG_HEARTBEAT)
			CHECK(d.a == 11 && d.b == 22 && d.arg[2] == 1 && d.page == 123456789);
		if (t == HK_MSG_EVAC)
			CHECK(d.node == 3 && d.mode == HK_MODE_EXCL && d.a == 0x5);
		if (t == HK_MSG_EVAC_ACK)
			CHECK(d.node == 3 && d.mode == HK_MODE_EXCL);
		if (t == HK_MSG_HOME_ENTRY)
			CHECK(d.page == 123456789 && d.node == 3 && d.a == 11);
		if (t == HK_MSG_MEMBERS)
			CHECK(d.a == 11 && d.b == 0x30 && d.count == 4);
		if (t == HK_MSG_HOME_MAP)
			CHECK(d.page == 123456789 && d.count == 4 && d.mac[2] == 2 && d.mac[3] == 0);
	}
}

/* The messages between the embedders are typed: a field out of its range
 * is refused by the decoder, before anything acts on it. */
static void test_cluster_messages_with_fields_out_of_range_are_refused(void)
{
	uint8_t buf[256];
	struct hk_msg d;
	const struct hk_msg bad[] = {
		{ .type = HK_MSG_IRQ, .vcpu = 1, .arg = { 0, 256, 0 } },     /* vector */
		{ .type = HK_MSG_IRQ, .vcpu = 1, .arg = { 8, 32, 0 } },      /* delivery mode */
		{ .type = HK_MSG_IRQ, .vcpu = 1, .arg = { 0, 32, 2 } },      /* trigger mode */
		{ .type = HK_MSG_IRQ, .vcpu = HK_MAX_VCPUS, .arg = { 0, 32, 0 } },
		{ .type = HK_MSG_APIC_ADDR, .vcpu = 1, .arg = { 0, 0, 16 } }, /* dest mode */
		{ .type = HK_MSG_EOI, .arg = { -1 } },
		{ .type = HK_MSG_VCPU_AT, .vcpu = HK_MAX_VCPUS },
		{ .type = HK_MSG_VCPU_AT, .vcpu = 1, .node = HK_MAX_NODES },
		{ .type = HK_MSG_MIGRATE, .vcpu = 1, .node = HK_MAX_NODES },
		{ .type = HK_MSG_EVAC, .node = 2, .mode = HK_EVAC_STEP_START, .a = 0x4 }, /* to itself */
		{ .type = HK_MSG_EVAC, .node = 2, .mode = HK_EVAC_STEP_START, .a = 0 },   /* to nobody */
		{ .type = HK_MSG_EVAC, .node = 2, .mode = 0, .a = 0x1 },                  /* no such step */
		{ .type = HK_MSG_EVAC, .node = 2, .mode = HK_EVAC_STEP_REHOME, .a = 0x3, .count = 2 }, /* to two */
		{ .type = HK_MSG_EVAC, .node = 2, .mode = HK_EVAC_STEP_REHOME, .a = 0x1, .count = 1 }, /* all */
		{ .type = HK_MSG_EVAC_ACK, .node = 2, .mode = HK_EVAC_STEP_REHOME },       /* not acked */
		{ .type = HK_MSG_EVAC_ACK, .node = 2, .mode = 9 },
		{ .type = HK_MSG_HOME_ENTRY, .page = 1, .node = 2, .a = 0x1 }, /* owner without a copy */
		{ .type = HK_MSG_HEARTBEAT, .arg = { 0, 1, 101 } },              /* health score */
		{ .type = HK_MSG_CONFIG, .count = 0, .page = 4096, .arg = { 1 } }, /* no vCPUs */
		{ .type = HK_MSG_CONFIG, .count = 1, .page = 4097, .arg = { 1 } }, /* not pages */
		{ .type = HK_MSG_CONFIG, .count = 1, .page = 4096 },           /* no CPUs */
		{ .type = HK_MSG_MEMBERS, .a = 0, .count = 2 },                /* nobody there */
		{ .type = HK_MSG_MEMBERS, .a = 0x3, .b = 0x2, .count = 2 },    /* there and gone */
		{ .type = HK_MSG_MEMBERS, .a = 0x3, .count = 0 },              /* started with none */
		{ .type = HK_MSG_HOME_MAP, .count = 0 },                       /* no chunk */
		{ .type = HK_MSG_HOME_MAP, .count = HK_HOME_MAP_PER_MSG + 1 },
		{ .type = HK_MSG_HOME_MAP, .count = 1, .mac = { HK_MAX_NODES } }, /* no such node */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = hk_msg_encode(&bad[i], buf, sizeof(buf));
		CHECK(n >= HK_MSG_HDR_LEN);
		CHECK(hk_msg_decode(buf, n, &d) == -EBADMSG);
	}
	/* a wrong length for a fixed-size cluster message */
	struct hk_msg eoi = { .type = HK_MSG_EOI, .arg = { 3 } };
	size_t n = hk_msg_encode(&eoi, buf, sizeof(buf));
	buf[8] = (uint8_t)(n - HK_MSG_HDR_LEN + 4);
	CHECK(hk_msg_decode(buf, n + 4, &d) == -EMSGSIZE);
}

static void test_rejects_malformed(void)
{
	uint8_t buf[64];
	struct hk_msg m = { .type = HK_MSG_INV, .page = 5 }, d;
	size_t n = hk_msg_encode(&m, buf, sizeof(buf));
	uint8_t bad[64];
	memcpy(bad, buf, n);
	bad[0] ^= 1; /* magic */
	CHECK(hk_msg_decode(bad, n, &d) == -EBADMSG);
	CHECK(hk_msg_decode(bad, 2, &d) == -EBADMSG); /* visible early */
	memcpy(bad, buf, n);
	bad[4] = 9; /* version */
	CHECK(hk_msg_decode(bad, n, &d) == -EPROTO && d.version == 9);
	memcpy(bad, buf, n);
	bad[6] = 200; /* type */
	CHECK(hk_msg_decode(bad, n, &d) == -EBADMSG);
	memcpy(bad, buf, n);
	bad[8] = 13; /* length does not fit the type */
	CHECK(hk_msg_decode(bad, n, &d) == -EMSGSIZE);
	memcpy(bad, buf, n);
	bad[7] = 1; /* unknown flags */
	CHECK(hk_msg_decode(bad, n, &d) == -EBADMSG);
	struct hk_msg r = { .type = HK_MSG_REQ, .mode = 7 };
	n = hk_msg_encode(&r, buf, sizeof(buf));
	CHECK(hk_msg_decode(buf, n, &d) == -EBADMSG); /* bad mode */
	/* a migratory read asks to write; a request for a copy cannot be one */
	struct hk_msg mr = { .type = HK_MSG_REQ, .mode = HK_MODE_EXCL, .aux = HK_REQ_MIGRATORY };
	n = hk_msg_encode(&mr, buf, sizeof(buf));
	CHECK(hk_msg_decode(buf, n, &d) == (int)n && d.aux == HK_REQ_MIGRATORY);
	mr.mode = HK_MODE_SHARED;
	n = hk_msg_encode(&mr, buf, sizeof(buf));
	CHECK(hk_msg_decode(buf, n, &d) == -EBADMSG);
	mr = (struct hk_msg){ .type = HK_MSG_REQ, .mode = HK_MODE_EXCL, .aux = 3 };
	n = hk_msg_encode(&mr, buf, sizeof(buf));
	CHECK(hk_msg_decode(buf, n, &d) == -EBADMSG);
	struct hk_msg v = { .type = HK_MSG_VCPU };
	n = hk_msg_encode(&v, buf, sizeof(buf));
	buf[8] = 0xff; buf[9] = 0xff; buf[10] = 0xff; buf[11] = 0x7f;
	CHECK(hk_msg_decode(buf, n, &d) == -EMSGSIZE);
}

static void test_two_frames_back_to_back(void)
{
	uint8_t buf[128];
	struct hk_msg a = { .type = HK_MSG_DONE, .page = 1 }, b = { .type = HK_MSG_BYE }, d;
	size_t n1 = hk_msg_encode(&a, buf, sizeof(buf));
	size_t n2 = hk_msg_encode(&b, buf + n1, sizeof(buf) - n1);
	CHECK(hk_msg_decode(buf, n1 + n2, &d) == (int)n1 && d.type == HK_MSG_DONE);
	CHECK(hk_msg_decode(buf + n1, n2, &d) == (int)n2 && d.type == HK_MSG_BYE);
}

int main(void)
{
	RUN(test_roundtrip_all_types);
	RUN(test_rejects_malformed);
	RUN(test_cluster_messages_with_fields_out_of_range_are_refused);
	RUN(test_two_frames_back_to_back);
	TEST_DONE();
}

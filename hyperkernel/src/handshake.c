/* handshake.c - mutual challenge/response with HMAC-SHA256 over the cluster
 * secret.  Each side proves it knows the secret by MACing the other side's
 * fresh nonce (from getrandom) and both node ids; the secret itself never
 * crosses the wire.  Version and cluster size are checked first so that a
 * mismatch gets a precise refusal instead of a MAC failure.
 *
 *   connector                         acceptor
 *   HELLO(id, count, Nc)       --->
 *                              <---   HELLO_ACK(id, count, Na, MAC(K, "acc"|c|a|Nc|Na))
 *   AUTH(MAC(K, "con"|c|a|Na|Nc)) --->
 *                              <---   AUTH_OK            (or REFUSE(reason) at any step)
 */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "hk.h"

struct hk_handshake_cfg hk_handshake_cfg_of(const struct hk_node *n)
{
	return (struct hk_handshake_cfg){ .self = n->self, .count = n->count,
					  .version = n->cfg.protocol_version, .secret = n->secret,
					  .timeout_ms = n->cfg.connect_timeout_ms };
}

static int fill_nonce(uint8_t *n)
{
	size_t got = 0;
	while (got < HK_NONCE_LEN) {
		ssize_t r = getrandom(n + got, HK_NONCE_LEN - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	return 0;
}

static void compute_mac(const struct hk_handshake_cfg *hc, const char *role, int con, int acc,
			const uint8_t *n1, const uint8_t *n2, uint8_t *out)
{
	uint8_t msg[8 + 4 + 2 * HK_NONCE_LEN];
	memset(msg, 0, sizeof(msg));
	memcpy(msg, role, strlen(role) < 8 ? strlen(role) : 8);
	msg[8] = (uint8_t)con;
	msg[9] = (uint8_t)acc;
	msg[10] = (uint8_t)(hc->version ? hc->version : HK_PROTOCOL_VERSION);
	memcpy(msg + 12, n1, HK_NONCE_LEN);
	memcpy(msg + 12 + HK_NONCE_LEN, n2, HK_NONCE_LEN);
	hk_hmac_sha256(hc->secret, strlen(hc->secret), msg, sizeof(msg), out);
}

static int version_of(const struct hk_handshake_cfg *hc)
{
	return hc->version ? hc->version : HK_PROTOCOL_VERSION;
}

void hk_handshake_refuse(int fd, const struct hk_handshake_cfg *hc, uint16_t reason)
{
	struct hk_msg m = { .type = HK_MSG_REFUSE, .version = (uint16_t)version_of(hc),
			    .reason = reason, .count = (uint32_t)version_of(hc) };
	hk_fd_send_msg(fd, &m);
}

const char *hk_refuse_text(unsigned reason)
{
	switch (reason) {
	case HK_REFUSE_VERSION: return "wrong protocol version";
	case HK_REFUSE_SECRET: return "wrong cluster secret";
	case HK_REFUSE_NODE: return "wrong node id or cluster size";
	case HK_REFUSE_SLOT:
		return "its node slot is taken, was used before, or is below a node already there "
		       "(a joining node takes a slot above every node in the cluster)";
	case HK_REFUSE_BUSY:
		return "the cluster is busy (starting, evacuating a node, or taking another node "
		       "in): try again";
	default: return "malformed handshake";
	}
}

/* Reads one handshake frame; turns decoder errors into a refusal. */
static int read_step(int fd, const struct hk_handshake_cfg *hc, struct hk_msg *m, int peer,
		     char *why, size_t whylen)
{
	uint8_t buf[HK_MSG_HDR_LEN + 128];
	int r = hk_fd_read_msg(fd, buf, sizeof(buf), m, hc->timeout_ms);
	if (r == -EPROTO) {
		snprintf(why, whylen, "peer %d speaks protocol version %u, we speak %d", peer,
			 m->version, HK_PROTOCOL_VERSION);
		hk_handshake_refuse(fd, hc, HK_REFUSE_VERSION);
		return -EPROTO;
	}
	if (r < 0 && r != -ETIMEDOUT && r != -ECONNRESET) {
		snprintf(why, whylen, "peer %d sent a malformed handshake (%s)", peer, strerror(-r));
		hk_handshake_refuse(fd, hc, HK_REFUSE_PROTOCOL);
		return -EBADMSG;
	}
	if (r < 0) {
		snprintf(why, whylen, "peer %d: %s during handshake", peer, strerror(-r));
		return r;
	}
	if (m->type == HK_MSG_REFUSE) {
		if (m->reason == HK_REFUSE_VERSION)
			snprintf(why, whylen, "peer %d refused: protocol version %d, it speaks %u",
				 peer, version_of(hc), m->count);
		else
			snprintf(why, whylen, "peer %d refused: %s", peer, hk_refuse_text(m->reason));
		return m->reason == HK_REFUSE_SECRET ? -EACCES : -ECONNREFUSED;
	}
	return 0;
}

int hk_handshake_connect(int fd, const struct hk_handshake_cfg *hc, int expect_peer,
			 char *why, size_t whylen)
{
	struct hk_msg m = { .type = HK_MSG_HELLO, .version = (uint16_t)version_of(hc),
			    .node = (uint32_t)hc->self, .count = (uint32_t)hc->count };
	uint8_t nc[HK_NONCE_LEN], mac[HK_SHA256_LEN];
	int r = fill_nonce(nc);
	if (r)
		return r;
	memcpy(m.nonce, nc, HK_NONCE_LEN);
	if ((r = hk_fd_send_msg(fd, &m)) < 0) {
		snprintf(why, whylen, "peer %d: send hello: %s", expect_peer, strerror(-r));
		return r;
	}
	if ((r = read_step(fd, hc, &m, expect_peer, why, whylen)) < 0)
		return r;
	if (m.type != HK_MSG_HELLO_ACK) {
		snprintf(why, whylen, "peer %d sent %s instead of hello_ack", expect_peer,
			 hk_msg_type_name(m.type));
		hk_handshake_refuse(fd, hc, HK_REFUSE_PROTOCOL);
		return -EBADMSG;
	}
	if ((int)m.node != expect_peer || (int)m.count != hc->count) {
		snprintf(why, whylen, "peer %d claims to be node %u of %u", expect_peer, m.node,
			 m.count);
		hk_handshake_refuse(fd, hc, HK_REFUSE_NODE);
		return -ECONNREFUSED;
	}
	compute_mac(hc, "acc", hc->self, expect_peer, nc, m.nonce, mac);
	if (!hk_ct_equal(mac, m.mac, HK_SHA256_LEN)) {
		snprintf(why, whylen, "peer %d refused: wrong cluster secret", expect_peer);
		hk_handshake_refuse(fd, hc, HK_REFUSE_SECRET);
		return -EACCES;
	}
	struct hk_msg a = { .type = HK_MSG_AUTH, .version = (uint16_t)version_of(hc) };
	compute_mac(hc, "con", hc->self, expect_peer, m.nonce, nc, a.mac);
	if ((r = hk_fd_send_msg(fd, &a)) < 0)
		return r;
	if ((r = read_step(fd, hc, &m, expect_peer, why, whylen)) < 0)
		return r;
	if (m.type != HK_MSG_AUTH_OK) {
		snprintf(why, whylen, "peer %d sent %s instead of auth_ok", expect_peer,
			 hk_msg_type_name(m.type));
		return -EBADMSG;
	}
	return expect_peer;
}

int hk_handshake_accept(int fd, const struct hk_handshake_cfg *hc, char *why, size_t whylen)
{
	struct hk_msg m;
	int r = read_step(fd, hc, &m, -1, why, whylen);
	if (r < 0)
		return r;
	if (m.type != HK_MSG_HELLO) {
		snprintf(why, whylen, "peer sent %s instead of hello", hk_msg_type_name(m.type));
		hk_handshake_refuse(fd, hc, HK_REFUSE_PROTOCOL);
		return -EBADMSG;
	}
	int peer = (int)m.node;
	if ((int)m.count != hc->count || peer == hc->self) {
		snprintf(why, whylen, "peer claims to be node %d of %u; we are node %d of %d",
			 peer, m.count, hc->self, hc->count);
		hk_handshake_refuse(fd, hc, HK_REFUSE_NODE);
		return -ECONNREFUSED;
	}
	uint8_t nc[HK_NONCE_LEN], na[HK_NONCE_LEN], mac[HK_SHA256_LEN];
	memcpy(nc, m.nonce, HK_NONCE_LEN);
	if ((r = fill_nonce(na)))
		return r;
	struct hk_msg ack = { .type = HK_MSG_HELLO_ACK, .version = (uint16_t)version_of(hc),
			      .node = (uint32_t)hc->self, .count = (uint32_t)hc->count };
	memcpy(ack.nonce, na, HK_NONCE_LEN);
	compute_mac(hc, "acc", peer, hc->self, nc, na, ack.mac);
	if ((r = hk_fd_send_msg(fd, &ack)) < 0)
		return r;
	if ((r = read_step(fd, hc, &m, peer, why, whylen)) < 0)
		return r;
	if (m.type != HK_MSG_AUTH) {
		snprintf(why, whylen, "peer %d sent %s instead of auth", peer,
			 hk_msg_type_name(m.type));
		hk_handshake_refuse(fd, hc, HK_REFUSE_PROTOCOL);
		return -EBADMSG;
	}
	compute_mac(hc, "con", peer, hc->self, na, nc, mac);
	if (!hk_ct_equal(mac, m.mac, HK_SHA256_LEN)) {
		snprintf(why, whylen, "peer %d refused: wrong cluster secret", peer);
		hk_handshake_refuse(fd, hc, HK_REFUSE_SECRET);
		return -EACCES;
	}
	struct hk_msg ok = { .type = HK_MSG_AUTH_OK, .version = (uint16_t)version_of(hc) };
	if ((r = hk_fd_send_msg(fd, &ok)) < 0)
		return r;
	return peer;
}

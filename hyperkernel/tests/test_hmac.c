/* test_hmac.c - SHA-256 and HMAC-SHA256 against published vectors
 * (FIPS 180-4 examples, RFC 4231 test cases 1, 2, 3, 4, 6, 7). */
#include <string.h>

#include "hk.h"
#include "hk_test.h"

static void hex(const uint8_t *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static int hmac_is(const void *key, size_t kl, const void *msg, size_t ml, const char *want)
{
	uint8_t mac[32];
	char h[65];
	hk_hmac_sha256(key, kl, msg, ml, mac);
	hex(mac, 32, h);
	return !strcmp(h, want);
}

static void test_sha256_vectors(void)
{
	uint8_t d[32];
	char h[65];
	struct hk_sha256 s;
	hk_sha256_init(&s);
	hk_sha256_update(&s, "abc", 3);
	hk_sha256_final(&s, d);
	hex(d, 32, h);
	CHECK(!strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
	hk_sha256_init(&s);
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	for (size_t i = 0; i < strlen(m); i++) /* byte by byte: exercises buffering */
		hk_sha256_update(&s, m + i, 1);
	hk_sha256_final(&s, d);
	hex(d, 32, h);
	CHECK(!strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

static void test_hmac_rfc4231(void)
{
	uint8_t k20[20], k131[131], d50[50];
	memset(k20, 0x0b, 20);
	CHECK(hmac_is(k20, 20, "Hi There", 8,
		      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
	CHECK(hmac_is("Jefe", 4, "what do ya want for nothing?", 28,
		      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
	memset(k20, 0xaa, 20);
	memset(d50, 0xdd, 50);
	CHECK(hmac_is(k20, 20, d50, 50,
		      "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"));
	uint8_t k25[25];
	for (int i = 0; i < 25; i++)
		k25[i] = (uint8_t)(i + 1);
	memset(d50, 0xcd, 50);
	CHECK(hmac_is(k25, 25, d50, 50,
		      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"));
	memset(k131, 0xaa, 131);
	CHECK(hmac_is(k131, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
		      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"));
	const char *m7 = "This is a test using a larger than block-size key and a larger than "
			 "block-size data. The key needs to be hashed before being used by the "
			 "HMAC algorithm.";
	CHECK(hmac_is(k131, 131, m7, strlen(m7),
		      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"));
}

static void test_ct_equal(void)
{
	uint8_t a[32] = { 0 }, b[32] = { 0 };
	CHECK(hk_ct_equal(a, b, 32));
	b[31] = 1;
	CHECK(!hk_ct_equal(a, b, 32));
	b[31] = 0;
	b[0] = 0x80;
	CHECK(!hk_ct_equal(a, b, 32));
}

int main(void)
{
	RUN(test_sha256_vectors);
	RUN(test_hmac_rfc4231);
	RUN(test_ct_equal);
	TEST_DONE();
}

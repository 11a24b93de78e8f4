/* fuzz_msg.c - libFuzzer target for the message decoder: feed arbitrary
 * bytes as a stream of frames, as a peer could; every frame that decodes must
 * re-encode to the same bytes, and nothing may read out of bounds (ASan). */
#include <stdlib.h>
#include <string.h>

#include "hk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A private copy of exactly size bytes, so ASan sees any overread. */
	uint8_t *buf = malloc(size ? size : 1);
	memcpy(buf, data, size);
	size_t off = 0;
	while (off < size) {
		struct hk_msg m;
		int r = hk_msg_decode(buf + off, size - off, &m);
		if (r <= 0)
			break;
		uint8_t *out = malloc((size_t)r);
		size_t n = hk_msg_encode(&m, out, (size_t)r);
		if (n != (size_t)r || memcmp(out, buf + off, n) != 0)
			abort();
		free(out);
		off += (size_t)r;
	}
	free(buf);
	return 0;
}

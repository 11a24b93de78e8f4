/* test_directory.c - home interleaving and the per-page request queue. */
#include <stdlib.h>

#include "hk.h"
#include "hk_test.h"

static void test_home_interleave(void)
{
	CHECK(hk_directory_home(0, 512, 4) == 0);
	CHECK(hk_directory_home(511, 512, 4) == 0);
	CHECK(hk_directory_home(512, 512, 4) == 1);
	CHECK(hk_directory_home(4 * 512, 512, 4) == 0);
	CHECK(hk_directory_home(5, 1, 4) == 1);
	CHECK(hk_directory_home(5, 0, 4) == 1); /* 0 means 1 */
}

static void test_queue_is_fifo(void)
{
	struct hk_directory d;
	CHECK(hk_directory_init(&d, 10) == 0);
	CHECK(d.e[3].owner == -1 && d.e[3].copyset == 0);
	for (int i = 0; i < 3; i++) {
		struct hk_dir_req *r = calloc(1, sizeof(*r));
		r->node = i;
		hk_directory_enqueue(&d.e[3], r);
	}
	for (int i = 0; i < 3; i++) {
		struct hk_dir_req *r = hk_directory_dequeue(&d.e[3]);
		CHECK(r && r->node == i);
		free(r);
	}
	CHECK(hk_directory_dequeue(&d.e[3]) == NULL);
	struct hk_dir_req *r = calloc(1, sizeof(*r));
	hk_directory_enqueue(&d.e[4], r); /* freed by destroy */
	hk_directory_destroy(&d);
}

int main(void)
{
	RUN(test_home_interleave);
	RUN(test_queue_is_fifo);
	TEST_DONE();
}

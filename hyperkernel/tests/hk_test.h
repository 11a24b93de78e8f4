/* hk_test.h - the in-house test macros: no framework, a binary per module,
 * exit status non-zero on any failure, "N passed, N failed" at the end. */
#ifndef HK_TEST_H
#define HK_TEST_H
#include <stdio.h>
#include <stdlib.h>

static int hk_t_passed, hk_t_failed, hk_t_cur_failed;

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			hk_t_cur_failed = 1;                                         \
		}                                                                    \
	} while (0)

#define RUN(fn)                                                                      \
	do {                                                                         \
		hk_t_cur_failed = 0;                                                 \
		fn();                                                                \
		if (hk_t_cur_failed) {                                               \
			hk_t_failed++;                                               \
			fprintf(stderr, "not ok %s\n", #fn);                         \
		} else {                                                             \
			hk_t_passed++;                                               \
			printf("ok %s\n", #fn);                                      \
		}                                                                    \
	} while (0)

#define TEST_DONE()                                                                  \
	do {                                                                         \
		printf("%d passed, %d failed\n", hk_t_passed, hk_t_failed);          \
		return hk_t_failed ? 1 : 0;                                          \
	} while (0)
#endif

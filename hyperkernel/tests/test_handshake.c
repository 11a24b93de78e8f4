/* test_handshake.c - bad peers, with real sockets between real processes:
 * a wrong cluster secret, a wrong protocol version and a garbage stream are
 * each refused; the node survives and still admits the right peer. */
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "hk.h"
#include "hk_test.h"
#include "test_node_util.h"

/* Node 1 in a child process; exit status = -hk_node_start(). */
static pid_t spawn_node1(const char *secret, int version)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct hk_config c;
		tn_config(&c, 1, 2, secret);
		c.protocol_version = version;
		struct hk_node *n;
		uint8_t *r = tn_region(4);
		if (hk_node_new(&c, &n) < 0 || hk_region_register(n, r, 4 * 4096) < 0)
			_exit(100);
		int rc = hk_node_start(n);
		if (rc == 0)
			usleep(300000);
		hk_node_free(n);
		_exit(-rc);
	}
	return pid;
}

static int child_status(pid_t pid)
{
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 200;
}

static struct hk_node *node0(const char *secret, uint32_t timeout_ms)
{
	struct hk_config c;
	tn_config(&c, 0, 2, secret);
	c.connect_timeout_ms = timeout_ms;
	struct hk_node *n;
	uint8_t *r = tn_region(4);
	if (hk_node_new(&c, &n) < 0 || hk_region_register(n, r, 4 * 4096) < 0)
		return NULL;
	return n;
}

static bool malformed_counted(struct hk_node *n)
{
	char *js = hk_stats_json(n);
	bool counted = js && !strstr(js, "\"malformed_messages\":0,");
	free(js);
	return counted;
}

static void test_right_secret_is_admitted(void)
{
	tn_init_dir(2);
	struct hk_node *n = node0("s3cret", 3000);
	CHECK(n != NULL);
	pid_t p = spawn_node1("s3cret", 0);
	CHECK(hk_node_start(n) == 0);
	CHECK(child_status(p) == 0);
	hk_node_free(n);
}

static void test_wrong_secret_is_refused(void)
{
	tn_init_dir(2);
	struct hk_node *n = node0("s3cret", 1500);
	pid_t p = spawn_node1("guess", 0);
	CHECK(hk_node_start(n) == -ETIMEDOUT); /* the stranger never counts */
	CHECK(child_status(p) == EACCES);
	CHECK(malformed_counted(n));
	hk_node_free(n);
}

static void test_wrong_version_is_refused(void)
{
	tn_init_dir(2);
	struct hk_node *n = node0("s3cret", 1500);
	pid_t p = spawn_node1("s3cret", HK_PROTOCOL_VERSION + 1);
	CHECK(hk_node_start(n) == -ETIMEDOUT);
	CHECK(child_status(p) == ECONNREFUSED);
	CHECK(malformed_counted(n));
	hk_node_free(n);
}

static void test_garbage_stream_is_refused(void)
{
	tn_init_dir(2);
	struct hk_node *n = node0("s3cret", 4000);
	struct tn_starter s = { .node = n };
	pthread_create(&s.th, NULL, tn_start_main, &s);
	usleep(200000);
	/* A stranger sends noise: the node must close on it and keep going. */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	strncpy(un.sun_path, tn_addr[0] + 5, sizeof(un.sun_path) - 1);
	CHECK(connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0);
	const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02\x03\xff\xfe";
	CHECK(write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
	char buf[256];
	ssize_t got, total = 0;
	while ((got = read(fd, buf, sizeof(buf))) > 0)
		total += got;
	/* closed by the node (a reset if our junk was left unread) */
	CHECK(got == 0 || (got < 0 && errno == ECONNRESET));
	close(fd);
	pid_t p = spawn_node1("s3cret", 0);
	pthread_join(s.th, NULL);
	CHECK(s.result == 0); /* the real peer still gets in */
	CHECK(child_status(p) == 0);
	CHECK(malformed_counted(n));
	hk_node_free(n);
}

int main(void)
{
	RUN(test_right_secret_is_admitted);
	RUN(test_wrong_secret_is_refused);
	RUN(test_wrong_version_is_refused);
	RUN(test_garbage_stream_is_refused);
	TEST_DONE();
}

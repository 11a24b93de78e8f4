/* test_policy.c - "page" brings the page, "vcpu" moves to the likely owner. */
#include "hk.h"
#include "hk_test.h"

static void test_policies(void)
{
	enum hk_policy_kind p;
	struct hk_stall s = { .likely_owner = 2, .home_node = 1 };
	struct hk_decision d;
	CHECK(hk_policy_parse("page", &p) == 0 && p == HK_POLICY_PAGE);
	hk_policy_decide(p, &s, &d);
	CHECK(d.kind == HK_BRING_PAGE);
	CHECK(hk_policy_parse("vcpu", &p) == 0 && p == HK_POLICY_VCPU);
	hk_policy_decide(p, &s, &d);
	CHECK(d.kind == HK_MOVE_VCPU && d.target_node == 2);
	CHECK(hk_policy_parse("nonsense", &p) == -EINVAL);
	CHECK(hk_policy_parse(NULL, &p) == 0 && p == HK_POLICY_PAGE);
}

int main(void)
{
	RUN(test_policies);
	TEST_DONE();
}

/* policy.c - what to do on a stall.  "page" brings the page (IVY-style DSM);
 * "vcpu" asks the embedder to send the vCPU to the page's likely owner. */
#include <string.h>

#include "hk.h"

int hk_policy_parse(const char *name, enum hk_policy_kind *out)
{
	if (!name || !strcmp(name, "page"))
		*out = HK_POLICY_PAGE;
	else if (!strcmp(name, "vcpu"))
		*out = HK_POLICY_VCPU;
	else
		return -EINVAL;
	return 0;
}

const char *hk_policy_name(enum hk_policy_kind p)
{
	return p == HK_POLICY_VCPU ? "vcpu" : "page";
}

void hk_policy_decide(enum hk_policy_kind p, const struct hk_stall *s, struct hk_decision *d)
{
	d->kind = HK_BRING_PAGE;
	d->target_node = -1;
	if (p == HK_POLICY_VCPU) {
		d->kind = HK_MOVE_VCPU;
		d->target_node = s->likely_owner;
	}
}

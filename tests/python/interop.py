"""A client from another gRPC implementation (Python grpcio), generated from proto/ alone.

It drives the SPEC §2 rules through the names of SPEC §3 against a server started with
--manual-clock and small policy thresholds (see tests/interop_python.rs). Exits non-zero on the
first mismatch.
"""
import os
import sys
import tempfile

from grpc_tools import protoc
import grpc

addr, proto_root = sys.argv[1], sys.argv[2]
out = tempfile.mkdtemp()
rc = protoc.main([
    "protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}",
    os.path.join(proto_root, "tiergate/v1/tiergate.proto"),
])
assert rc == 0, "protoc failed"
sys.path.insert(0, out)
from tiergate.v1 import tiergate_pb2 as pb  # noqa: E402
from tiergate.v1 import tiergate_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(addr)
gov = rpc.SendGovernorStub(channel)
admin = rpc.GovernorAdminStub(channel)
DAY = 86_400_000


def org(org_id, tier, phone, mps=1000, path=True):
    o = pb.Org(org_id=org_id, tier=tier,
               phone_numbers=[pb.PhoneNumber(phone_number_id=phone, throughput_mps=mps)])
    if path:
        o.escalation_path.CopyFrom(pb.EscalationPath(kind=pb.ESCALATION_KIND_EMAIL,
                                                     contact="help@example.com"))
    return admin.PutOrg(pb.PutOrgRequest(org=o))


def acquire(org_id, phone, to, key=""):
    return gov.Acquire(pb.AcquireRequest(org_id=org_id, phone_number_id=phone, recipient=str(to),
                                         template_name="order_update",
                                         category=pb.CATEGORY_UTILITY, idempotency_key=key))


def expect(resp, reason):
    assert resp.verdict == pb.VERDICT_DENY and resp.reason == reason, resp


def ok(resp):
    assert resp.verdict == pb.VERDICT_ALLOW and resp.reason == pb.DENY_REASON_UNSPECIFIED, resp
    return resp


# Start gate, then a tier increase held until an escalation path is set.
org("py", pb.TIER_250, "42", path=False)
expect(acquire("py", "42", 1), pb.DENY_REASON_ESCALATION_PATH_REQUIRED)
t = admin.RequestTierChange(pb.RequestTierChangeRequest(org_id="py", target_tier=pb.TIER_1K))
assert not t.applied and t.pending_tier == pb.TIER_1K, t
assert t.held_reason == pb.DENY_REASON_ESCALATION_PATH_REQUIRED, t
o = admin.SetEscalationPath(pb.SetEscalationPathRequest(
    org_id="py", path=pb.EscalationPath(kind=pb.ESCALATION_KIND_PHONE, contact="+4915112345678")))
assert o.tier == pb.TIER_1K and o.pending_tier == pb.TIER_UNSPECIFIED, o

# Pair rate, idempotency, and a NOT_SENT report giving the slot back.
ok(acquire("py", "42", 1))
r = acquire("py", "42", 1)
expect(r, pb.DENY_REASON_PAIR_RATE)
assert r.retry_after_ms == 6000, r
a = ok(acquire("py", "42", 2, key="order-2"))
assert acquire("py", "42", 2, key="order-2").permit_id == a.permit_id
gov.Report(pb.ReportRequest(permit_id=a.permit_id, outcome=pb.SEND_OUTCOME_NOT_SENT))
assert admin.GetOrg(pb.GetOrgRequest(org_id="py")).usage.templates_7d == 1

# The weekly cap without an escalation path (5 in this server's policy).
admin.ClearEscalationPath(pb.ClearEscalationPathRequest(org_id="py"))
for to in range(10, 14):
    ok(acquire("py", "42", to))
expect(acquire("py", "42", 99), pb.DENY_REASON_WEEKLY_CAP_WITHOUT_ESCALATION)

# Throughput of a number.
org("tp", pb.TIER_250, "43", mps=2)
ok(acquire("tp", "43", 1))
ok(acquire("tp", "43", 2))
r = acquire("tp", "43", 3)
expect(r, pb.DENY_REASON_THROUGHPUT)
assert r.retry_after_ms == 500, r

# The tier window: 50 unique recipients, then a retry-after when the oldest leaves.
org("tl", pb.TIER_50, "44")
for to in range(50):
    ok(acquire("tl", "44", to))
admin.AdvanceClock(pb.AdvanceClockRequest(millis=6000))
assert ok(acquire("tl", "44", 7)).usage.unique_recipients_24h == 50  # a repeat is not counted
r = acquire("tl", "44", 1000)
expect(r, pb.DENY_REASON_TIER_LIMIT)
assert 0 < r.retry_after_ms <= DAY and r.usage.tier_limit == 50, r

# RED for 7 days: small senders pass through, then the restricted tier (TIER_50 below 250).
org("rq", pb.TIER_250, "45")
o = admin.SetQualityRating(pb.SetQualityRatingRequest(org_id="rq", rating=pb.QUALITY_RATING_RED))
assert o.flagged_since_unix_ms > 0 and not o.restricted, o
admin.AdvanceClock(pb.AdvanceClockRequest(millis=7 * DAY))
assert admin.GetOrg(pb.GetOrgRequest(org_id="rq")).restricted
for to in range(3):
    assert ok(acquire("rq", "45", to)).usage.passthrough
for to in range(3, 50):
    ok(acquire("rq", "45", to))
r = acquire("rq", "45", 1000)
expect(r, pb.DENY_REASON_QUALITY_RESTRICTED)
assert r.usage.tier == pb.TIER_50 and not r.usage.passthrough, r

# An approved appeal clears RED and the restriction.
ap = admin.FileAppeal(pb.FileAppealRequest(org_id="rq", evidence="support form added"))
assert ap.status == pb.APPEAL_STATUS_PENDING, ap
ap = admin.ResolveAppeal(pb.ResolveAppealRequest(appeal_id=ap.appeal_id, approved=True))
assert ap.status == pb.APPEAL_STATUS_APPROVED, ap
o = admin.GetOrg(pb.GetOrgRequest(org_id="rq"))
assert not o.restricted and o.flagged_since_unix_ms == 0, o
ok(acquire("rq", "45", 1000))

# Account restricted (rule 3) and template paused (rule 4), in that order.
admin.SetAccountRestricted(pb.SetAccountRestrictedRequest(org_id="rq", restricted=True))
o = admin.PauseTemplate(pb.PauseTemplateRequest(org_id="rq", template_name="order_update",
                                                until_unix_ms=0))
assert o.account_restricted and o.paused_templates[0].disabled, o
expect(acquire("rq", "45", 2000), pb.DENY_REASON_ACCOUNT_RESTRICTED)
admin.SetAccountRestricted(pb.SetAccountRestrictedRequest(org_id="rq", restricted=False))
r = acquire("rq", "45", 2000)
expect(r, pb.DENY_REASON_TEMPLATE_PAUSED)
assert r.retry_after_ms == 0, r
now = admin.AdvanceClock(pb.AdvanceClockRequest(millis=0)).now_unix_ms
admin.PauseTemplate(pb.PauseTemplateRequest(org_id="rq", template_name="order_update",
                                            until_unix_ms=now + 3_600_000))
r = acquire("rq", "45", 2000)
expect(r, pb.DENY_REASON_TEMPLATE_PAUSED)
assert r.retry_after_ms == 3_600_000, r
admin.ReinstateTemplate(pb.ReinstateTemplateRequest(org_id="rq", template_name="order_update"))
p = ok(acquire("rq", "45", 2000))

# Advice (SPEC §2a): what to do about the WhatsApp error a send got, by its SPEC name.
r = gov.Report(pb.ReportRequest(permit_id=p.permit_id, outcome=pb.SEND_OUTCOME_REJECTED,
                                error_code=131050))
assert pb.Advice.Name(r.advice) == "ADVICE_DO_NOT_RETRY" and r.retry_after_ms == 0, r
p = ok(acquire("rq", "45", 2001))
r = gov.Report(pb.ReportRequest(permit_id=p.permit_id, outcome=pb.SEND_OUTCOME_REJECTED,
                                error_code=131056))
assert pb.Advice.Name(r.advice) == "ADVICE_RETRY_AFTER" and r.retry_after_ms == 1000, r

# Recipients (2026): a phone and a business-scoped user id in one send are one person from then
# on; the BSUID alone hits the same window entry and the same pair-rate cell.
org("bs", pb.TIER_250, "46")
def by_ids(to, user_id):
    return gov.Acquire(pb.AcquireRequest(org_id="bs", phone_number_id="46", recipient=to,
                                         recipient_user_id=user_id, template_name="t",
                                         category=pb.CATEGORY_UTILITY))
ok(by_ids("16505551234", "US.13491208655302741918"))
expect(by_ids("", "US.13491208655302741918"), pb.DENY_REASON_PAIR_RATE)
admin.AdvanceClock(pb.AdvanceClockRequest(millis=6_000))
assert ok(by_ids("", "US.13491208655302741918")).usage.unique_recipients_24h == 1
try:
    by_ids("16505551234", "US.ENT.")
    raise AssertionError("a malformed BSUID must be INVALID_ARGUMENT")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "recipient_user_id" in e.details(), e

# Preflight (SPEC §2a): a plan of 300 new recipients on TIER_250, by the SPEC's names.
org("pl", pb.TIER_250, "47")
now = admin.AdvanceClock(pb.AdvanceClockRequest(millis=0)).now_unix_ms
before = admin.GetOrg(pb.GetOrgRequest(org_id="pl"))
p = gov.Plan(pb.PlanRequest(org_id="pl", phone_number_id="47", template_name="order_update",
                            category=pb.CATEGORY_UTILITY, audience_size=300))
assert p.allowed_now == 250, p
assert [(w.at_unix_ms, w.count) for w in p.waves] == [(now, 250), (now + DAY, 50)], p
assert p.completes_at_unix_ms == now + DAY and p.binding == pb.DENY_REASON_TIER_LIMIT, p
assert pb.DenyReason.Name(p.binding) == "DENY_REASON_TIER_LIMIT", p
assert p.already_counted == 0 and p.never == 0 and p.unplanned == 0, p
assert admin.GetOrg(pb.GetOrgRequest(org_id="pl")) == before, "a plan changes nothing"
# A list: a recipient already in the window costs no new slot.
ok(acquire("pl", "47", 7001))
admin.AdvanceClock(pb.AdvanceClockRequest(millis=60_000))
p = gov.Plan(pb.PlanRequest(org_id="pl", phone_number_id="47", template_name="order_update",
                            category=pb.CATEGORY_UTILITY, recipients=["7001", "7002"]))
assert p.already_counted == 1 and p.allowed_now == 2 and len(p.waves) == 1, p
assert p.binding == pb.DENY_REASON_UNSPECIFIED, p
for bad, field in [(dict(recipients=["7001"], audience_size=3), "audience_size"),
                   (dict(), "audience_size"),
                   (dict(recipients=["7001", "+49 151"]), "recipients[1]")]:
    try:
        gov.Plan(pb.PlanRequest(org_id="pl", phone_number_id="47", template_name="order_update",
                                category=pb.CATEGORY_UTILITY, **bad))
        raise AssertionError(f"{bad} must be INVALID_ARGUMENT")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and field in e.details(), e

# Category reserves: the org's own 20 % for AUTHENTICATION leaves MARKETING 40 of TIER_50.
o = pb.Org(org_id="rs", tier=pb.TIER_50,
           phone_numbers=[pb.PhoneNumber(phone_number_id="48", throughput_mps=1000)],
           reserve_authentication_percent=20)
o.escalation_path.CopyFrom(pb.EscalationPath(kind=pb.ESCALATION_KIND_EMAIL,
                                             contact="help@example.com"))
o = admin.PutOrg(pb.PutOrgRequest(org=o))
assert o.HasField("reserve_authentication_percent") and o.reserve_authentication_percent == 20, o
assert not o.HasField("reserve_utility_percent"), o
assert o.reserves_in_force.authentication_percent == 20, o
p = gov.Plan(pb.PlanRequest(org_id="rs", phone_number_id="48", template_name="promo",
                            category=pb.CATEGORY_MARKETING, audience_size=41))
assert p.allowed_now == 40 and p.binding == pb.DENY_REASON_CATEGORY_RESERVE, p


def send(to, category):
    return gov.Acquire(pb.AcquireRequest(org_id="rs", phone_number_id="48", recipient=str(to),
                                         template_name="promo", category=category))


for to in range(40):
    ok(send(to, pb.CATEGORY_MARKETING))
r = send(40, pb.CATEGORY_MARKETING)
expect(r, pb.DENY_REASON_CATEGORY_RESERVE)
assert pb.DenyReason.Name(r.reason) == "DENY_REASON_CATEGORY_RESERVE", r
assert 0 < r.retry_after_ms <= DAY, r
for to in range(40, 50):
    ok(send(to, pb.CATEGORY_AUTHENTICATION))
expect(send(50, pb.CATEGORY_AUTHENTICATION), pb.DENY_REASON_TIER_LIMIT)
f = admin.GetOrg(pb.GetOrgRequest(org_id="rs")).fill
assert (f.marketing, f.utility, f.authentication) == (40, 0, 10), f
try:
    o.reserve_authentication_percent = 101
    admin.PutOrg(pb.PutOrgRequest(org=o))
    raise AssertionError("a reserve of 101 % must be INVALID_ARGUMENT")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    assert "org.reserve_authentication_percent" in e.details(), e

# Errors are gRPC errors; denials are not.
try:
    acquire("nobody", "1", 1)
    raise AssertionError("unknown org must be NOT_FOUND")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e
try:
    acquire("py", "42", "+49 151")
    raise AssertionError("bad recipient must be INVALID_ARGUMENT")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "recipient" in e.details(), e

# A batch (SPEC §2a): results in order, each as a lone Acquire; a bad item refuses them all.
org("bt", pb.TIER_250, "49")


def item(to, key=""):
    return pb.AcquireRequest(org_id="bt", phone_number_id="49", recipient=str(to),
                             template_name="order_update", category=pb.CATEGORY_UTILITY,
                             idempotency_key=key)


b = gov.AcquireBatch(pb.AcquireBatchRequest(sends=[item(1), item(2, key="b-2"), item(1),
                                                   item(2, key="b-2")]))
assert len(b.results) == 4, b
ok(b.results[0])
ok(b.results[1])
expect(b.results[2], pb.DENY_REASON_PAIR_RATE)
assert b.results[3].permit_id == b.results[1].permit_id, b
assert b.results[1].usage.unique_recipients_24h == 2, b
try:
    gov.AcquireBatch(pb.AcquireBatchRequest(sends=[item(3), item("+49 151"), item(4)]))
    raise AssertionError("a batch with a bad item must be INVALID_ARGUMENT")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    assert "sends[1].recipient" in e.details(), e
assert admin.GetOrg(pb.GetOrgRequest(org_id="bt")).usage.templates_7d == 2

# Waiting (SPEC §2a): held until the number may send again (the manual clock moves it), or
# answered at once when the wait cannot suffice.
org("wt", pb.TIER_250, "50", mps=1)
ok(acquire("wt", "50", 1))


def waiting(to, max_wait_ms):
    return pb.AcquireRequest(org_id="wt", phone_number_id="50", recipient=str(to),
                             template_name="order_update", category=pb.CATEGORY_UTILITY,
                             max_wait_ms=max_wait_ms)


short = gov.Acquire(waiting(2, 500))
expect(short, pb.DENY_REASON_THROUGHPUT)
assert short.retry_after_ms == 1000, short
held = gov.Acquire.future(waiting(3, 5000))
while admin.GetOrg(pb.GetOrgRequest(org_id="wt")).usage.templates_7d == 1 and not held.done():
    admin.AdvanceClock(pb.AdvanceClockRequest(millis=250))
ok(held.result(timeout=10))
assert admin.GetOrg(pb.GetOrgRequest(org_id="wt")).usage.templates_7d == 2

assert len(admin.ListOrgs(pb.ListOrgsRequest()).orgs) == 9
print("interop ok")

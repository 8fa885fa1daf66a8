/* schema — what the C side and the Redis functions (src/lua/) must agree on, written once.
 *
 * Each list below is an X-macro.  C expands it into enums and name tables (ops.h,
 * store.h and the modules that read replies); the Makefile runs src/lua/schema.lua.in,
 * which includes this header, through the C preprocessor to make the Lua tables the
 * functions index with.  A field, a position in a reply or a name means the same on both
 * sides because both are made from these lines: add to a list here, never in one side. */
#ifndef WAGUARD_SCHEMA_H
#define WAGUARD_SCHEMA_H

/* ---- the functions of the library (store_call) ----------------------------------
 * X(ENUM, name, writes): name is the function's name after the library's prefix;
 * writes = 0 marks it no-writes for Redis (it runs when Redis is out of memory). */
#define SCHEMA_FUNCTIONS(X) \
    X(APPLY, apply, 1) \
    X(GATE, gate, 0) \
    X(CLAIM, claim, 1) \
    X(OUTCOME, outcome, 1) \
    X(REQUEST, request, 1) \
    X(LIST, list, 0) \
    X(GET, get, 0) \
    X(STATS, stats, 0) \
    X(RELEASE, release, 1) \
    X(BLOCKSYNC, blocksync, 1) \
    X(BUDGET, budget, 1) \
    X(AUDIT, audit, 0) \
    X(RETRY, retry, 1)

/* ---- the operations apply takes ---------------------------------------------------
 * X(ENUM, kind): an operation is its kind, then its fields in the order its
 * SCHEMA_OP_<ENUM> list gives, each a string ("" for none).  Times are milliseconds
 * since the epoch, "0" meaning "when it reaches Redis"; flags are "1" or "". */
#define SCHEMA_OP_KINDS(X) \
    X(IDENTITY, id) \
    X(INBOUND, in) \
    X(NUMBER, num) \
    X(USER_ID, uid) \
    X(SYSTEM, sys) \
    X(CONTACT, cc) \
    X(PROFILE, prof) \
    X(STATUS, st) \
    X(ERROR, err) \
    X(BLOCK, blk) \
    X(SENT, sent) \
    X(REFUSED, ref) \
    X(UNUSABLE, unk) \
    X(DEAD, dead)

/* F(OP, field).  w: the record's name (a wa_id, or a user id when no wa_id is known);
 * u: a user id seen together with w (linked to it); pu: a parent user id (CC.ENT.…). */
/* an identity observed: hash, its time, where from (ops_source), acknowledged, the
 * message or status that carried it, part (carried by that message: skipped with it) */
#define SCHEMA_OP_IDENTITY(F) F(IDENTITY, w) F(IDENTITY, u) F(IDENTITY, h) F(IDENTITY, t) \
    F(IDENTITY, src) F(IDENTITY, ack) F(IDENTITY, mid) F(IDENTITY, part)
/* an inbound message: time, id, type, the business number it came to ("" On-Premises) */
#define SCHEMA_OP_INBOUND(F) F(INBOUND, w) F(INBOUND, u) F(INBOUND, pu) F(INBOUND, t) \
    F(INBOUND, mid) F(INBOUND, type) F(INBOUND, n)
/* the user moved from number w to nw; u the new user id, pu the previous one (Cloud) */
#define SCHEMA_OP_NUMBER(F) F(NUMBER, w) F(NUMBER, nw) F(NUMBER, u) F(NUMBER, pu) \
    F(NUMBER, t) F(NUMBER, mid)
/* the user id prev became u (w: the wa_id when the webhook names it) */
#define SCHEMA_OP_USER_ID(F) F(USER_ID, prev) F(USER_ID, u) F(USER_ID, w) F(USER_ID, t) \
    F(USER_ID, mid)
/* another system message of type st */
#define SCHEMA_OP_SYSTEM(F) F(SYSTEM, w) F(SYSTEM, u) F(SYSTEM, st) F(SYSTEM, t) F(SYSTEM, mid)
/* a contact check: the normalised input, as given, its status, the wa_id when valid */
#define SCHEMA_OP_CONTACT(F) F(CONTACT, in) F(CONTACT, raw) F(CONTACT, st) F(CONTACT, w)
/* a sender's profile: the name, and the username a user who hides the phone number chose */
#define SCHEMA_OP_PROFILE(F) F(PROFILE, w) F(PROFILE, u) F(PROFILE, pu) F(PROFILE, name) F(PROFILE, uname)
/* a message status: id, status, recipient (may be ""), error codes (comma separated),
 * the business number (its time is no rule's: a status is ordered by nothing) */
#define SCHEMA_OP_STATUS(F) F(STATUS, id) F(STATUS, st) F(STATUS, w) F(STATUS, u) \
    F(STATUS, codes) F(STATUS, n)
/* an error outside any message */
#define SCHEMA_OP_ERROR(F) F(ERROR, code) F(ERROR, title) F(ERROR, details)
/* block state from a forwarded answer: recipient forms (recipient_spec), 1 or 0, number */
#define SCHEMA_OP_BLOCK(F) F(BLOCK, spec) F(BLOCK, b) F(BLOCK, n)
/* a send went out: the recipient forms, the record the gate decided for, the message id
 * the answer gave, the business number, the identity hash it was pinned to */
#define SCHEMA_OP_SENT(F) F(SENT, spec) F(SENT, w) F(SENT, mid) F(SENT, n) F(SENT, h)
/* WhatsApp refused a send because the user's identity changed (480, 137000): the
 * record (or "" when only the message id names it), the message id, the codes, number */
#define SCHEMA_OP_REFUSED(F) F(REFUSED, w) F(REFUSED, u) F(REFUSED, mid) F(REFUSED, codes) \
    F(REFUSED, n)
/* a webhook said the user's identity changed but what it gave cannot be used */
#define SCHEMA_OP_UNUSABLE(F) F(UNUSABLE, w) F(UNUSABLE, u) F(UNUSABLE, why) F(UNUSABLE, mid)
/* an item that could not be understood: why, and its JSON text */
#define SCHEMA_OP_DEAD(F) F(DEAD, reason) F(DEAD, item)

/* ---- the record of a user (docs/data-model.md) ------------------------------------
 * The hash KEY_PREFIX ":" SCHEMA_KEY_USER ":{" W "}" is the record of user W; the hash
 * KEY_PREFIX ":" SCHEMA_KEY_CONTACT ":{" N "}" is what a contact check answered for the
 * number N (its field SCHEMA_CONTACT_WA_ID the wa_id it mapped N to).  The functions
 * name every other key themselves (src/lua/base.lua); these two are here because the
 * gate's common case reads them without a function (gate.c).
 * X(ENUM, field): the record's fields.  A window or a block of one business number N is
 * the field's name, SCHEMA_NUMBER_SEP, then N (last_in:N, blocked:N). */
#define SCHEMA_KEY_USER "user"
#define SCHEMA_KEY_CONTACT "contact"
#define SCHEMA_CONTACT_WA_ID "wa_id"
#define SCHEMA_NUMBER_SEP ":"
/* A send waguard forwarded is remembered for [proxy] sent_ttl_s by the message id its
 * answer gave: the string KEY_PREFIX ":" SCHEMA_KEY_SENT ":{" MID "}" holds the record the
 * send went to, the business number and the pinned hash, SCHEMA_SENT_SEP between them
 * (src/sentmem.c writes it, and apply's SENT operation; apply reads it for a failed status
 * that names nobody).  KEY_PREFIX ":" SCHEMA_KEY_CHECKS is the sorted set of the numbers
 * checked and never sent to ([contacts] check_budget): a send takes its numbers off it. */
#define SCHEMA_KEY_SENT "sent"
#define SCHEMA_SENT_SEP "\n"
#define SCHEMA_KEY_CHECKS "checks"
#define SCHEMA_RECORD_FIELDS(X) \
    X(HASH, id_hash) X(TS, id_ts) X(RX, id_rx) X(ACK, id_ack) X(STATE, id_state) \
    X(ATTEMPTS, id_attempts) X(ERR, id_err) X(NEXT, id_next) X(LEASE, id_lease) \
    X(REQUESTED_BY, id_requested_by) X(CHANGED_AT, id_changed_at) X(ACKED_BY, id_acked_by) \
    X(ACKED_AT, id_acked_at) X(LAST_IN, last_in) X(BLOCKED, blocked) X(MOVED_TO, moved_to) \
    X(MOVED_AT, moved_at) X(CONTACT, contact) X(CONTACT_AT, contact_at) X(NAME, name) \
    X(USER_ID, user_id) X(PARENT, parent_user_id) X(USERNAME, username) \
    X(HOLD_RELEASED, hold_released) X(REACK, id_reack) X(SEEN_IN, seen_in)
/* X(ENUM): the fields a send decision reads, in the order the gate reads them (then, for
 * one business number, its window and its block) */
#define SCHEMA_GATE_FIELDS(X) X(HASH) X(TS) X(STATE) X(LAST_IN) X(BLOCKED) X(MOVED_TO) \
    X(CONTACT) X(CONTACT_AT) X(CHANGED_AT) X(HOLD_RELEASED)

/* ---- identity states (the field id_state; src/lua/identity.lua) ------------------ */
#define SCHEMA_STATES(X) \
    X(PENDING, pending) \
    X(ACKNOWLEDGED, acknowledged) \
    X(FAILED, failed) \
    X(HASH_UNKNOWN, hash_unknown)

/* ---- replies ----------------------------------------------------------------------
 * X(NAME): the values a function returns, 1-based in Lua, 0-based in C. */

/* apply: a line per body, these counts separated by spaces (or "!" and the error for a
 * body that Redis refused); store.c hands each body its counts as an array */
#define SCHEMA_APPLY_REPLY(X) X(ACCEPTED) X(DUPLICATES) X(LATE) X(DEAD) X(QUEUED) X(FUTURE) \
    X(UNPLACED)
/* gate: for each recipient the number of users it names, then for each user these */
#define SCHEMA_GATE_USER(X) X(KEY) X(EXISTS) X(HASH) X(TS) X(STATE) X(LAST_IN) X(BLOCKED) \
    X(MOVED_TO) X(CONTACT) X(CONTACT_AT) X(CHANGED_AT) X(HOLD_RELEASED) X(RETIRED_TO)
/* claim: for each job these */
#define SCHEMA_CLAIM_JOB(X) X(W) X(HASH) X(ATTEMPTS) X(TS) X(WHO) X(LEASE)
/* list: a cursor, then for each identity these */
#define SCHEMA_LIST_ITEM(X) X(W) X(HASH) X(TS) X(STATE) X(ATTEMPTS) X(ERR) X(SINCE) X(NAME) \
    X(NEXT) X(USER_ID) X(CHANGED_AT) X(OLD_HASH) X(HOLD_RELEASED) X(LEASE)
/* The functions an operator's name goes to (get, request, release) first answer how it
 * resolved, as the gate resolves it: FOUND and the record, or UNKNOWN, or AMBIGUOUS and
 * the records it could name. */
#define SCHEMA_PICK(X) X(FOUND, 0) X(UNKNOWN, -1) X(AMBIGUOUS, -2)
/* get: the pick, the record's values, then its history and its acknowledgement trail
 * (JSON each) */
#define SCHEMA_GET_RECORD(X) X(W) X(HASH) X(TS) X(STATE) X(ATTEMPTS) X(ERR) X(ACKED_BY) \
    X(ACKED_AT) X(CHANGED_AT) X(NAME) X(USER_ID) X(PARENT_USER_ID) X(LAST_IN) X(BLOCKED) \
    X(MOVED_TO) X(CONTACT) X(NEXT) X(LEASE) X(REQUESTED_BY) X(HOLD_RELEASED) X(SINCE) X(RX) \
    X(CONTACT_AT) X(USERNAME) X(LAST_IN_BY_NUMBER) X(BLOCKED_BY_NUMBER)
/* stats: the gauges */
#define SCHEMA_STATS(X) X(PENDING) X(FAILED) X(QUEUED) X(OLDEST) X(CHECKS_UNSENT) X(HELD) \
    X(BLOCKED) X(CHANGES_24H) X(REFUSALS_24H)
/* release: what was lifted */
#define SCHEMA_RELEASE_REPLY(X) X(W) X(CHANGED_AT) X(HASH)
/* budget: may it go, the count, when the oldest frees (ms) */
#define SCHEMA_BUDGET_REPLY(X) X(OK) X(COUNT) X(FREES_AT)
/* audit: a cursor, then for each entry these */
#define SCHEMA_AUDIT_ITEM(X) X(ID) X(W) X(HASH) X(WHO) X(RESULT) X(ANSWER) X(AT)

/* request (an operator asks for the acknowledgement now): its answer */
#define SCHEMA_REQUEST_RESULTS(X) X(UNKNOWN, -1) X(ALREADY, 0) X(QUEUED, 1) \
    X(WAITS_FOR_HASH, 2)

#endif
